/** `npm run infra:up|down|status|logs` — the native stack for machines without Docker. */
import { spawn } from 'node:child_process';
import { Command } from 'commander';
import { kafkaClient, s3Client } from '../common/clients';
import { config, loadConfig } from '../common/config';
import { ensureBucket, ensureTopics } from '../common/topics';
import { StackError, tail } from './proc';
import { down, logFile, status, up } from './stack';

const program = new Command('infra')
  .description(
    'Install (once) and run the native stack — Kafka (KRaft), Redis, MinIO, Temporal dev server — under STACK_HOME ' +
      `(now ${config().stack.home}).\nPorts come from KAFKA_PORT, REDIS_PORT, MINIO_PORT, MINIO_CONSOLE_PORT, TEMPORAL_PORT, TEMPORAL_UI_PORT.`,
  )
  .option('--ha', 'the replicated stack (3 Kafka brokers, Redis primary + replica + 3 Sentinels, MinIO on 4 drives) in its own STACK_HOME (default .stack-ha); later commands on that home know it without the flag')
  .showHelpAfterError();

/** The flag wins; without it, the HA marker in STACK_HOME decides (common/config.ts). */
const stackConfig = () => (program.opts<{ ha?: boolean }>().ha ? loadConfig({ ...process.env, STACK_HA: 'true' }) : config());

program
  .command('up')
  .description('install what is missing, start what is down, health-check everything; reuses a stack that is already up')
  .argument('[services...]', 'only these services (kafka, redis, minio, temporal)')
  .action(async (only: string[]) => {
    const t0 = Date.now();
    const result = await up({ cfg: stackConfig(), only });
    const took = ((Date.now() - t0) / 1000).toFixed(1);
    process.stdout.write(
      `stack up in ${took} s (started: ${result.started.join(', ') || 'none'}; already running: ${result.reused.join(', ') || 'none'})\n`,
    );
    for (const [name, url] of Object.entries(result.urls)) process.stdout.write(`  ${name.padEnd(18)} ${url}\n`);
  });

program
  .command('down')
  .description('stop the services this stack started (by their recorded pids, nothing else)')
  .argument('[services...]', 'only these services')
  .action(async (only: string[]) => {
    const stopped = await down({ cfg: stackConfig(), only });
    process.stdout.write(stopped.length ? `stopped: ${stopped.join(', ')}\n` : 'nothing was running\n');
  });

program
  .command('status')
  .description('show each service: pid, health, ports, log; exits 1 when any is not healthy')
  .argument('[services...]', 'only these services')
  .option('--json', 'print JSON')
  .action(async (only: string[], opts: { json?: boolean }) => {
    const rows = await status({ cfg: stackConfig(), only });
    if (opts.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    else
      for (const r of rows) {
        const state = r.healthy ? 'healthy' : r.running ? 'UNHEALTHY' : r.installed ? 'stopped' : 'not installed';
        process.stdout.write(`${r.name.padEnd(13)} ${state.padEnd(13)} pid ${String(r.pid ?? '-').padEnd(8)} ports ${r.ports.join(',').padEnd(11)} log ${r.log}\n`);
      }
    if (!rows.every((r) => r.healthy)) process.exitCode = 1;
  });

program
  .command('provision')
  .description('create the Kafka topics and the S3 bucket on the configured endpoints (KAFKA_BROKERS, S3_ENDPOINT); for docker-compose or an existing cluster')
  .action(async () => {
    const cfg = stackConfig();
    await ensureTopics(kafkaClient(cfg), cfg);
    await ensureBucket(s3Client(cfg), cfg.s3.bucket);
    process.stdout.write(`topics ${cfg.kafka.rawTopic}, ${cfg.kafka.dlqTopic} and bucket ${cfg.s3.bucket} are ready\n`);
  });

program
  .command('logs')
  .description("print the end of a service's log (or follow it)")
  .argument('<service>', 'kafka, redis, minio or temporal (HA: kafka-1..3, redis-replica, sentinel-1..3 too)')
  .option('-n, --lines <n>', 'lines to show', '50')
  .option('-f, --follow', 'keep printing new lines')
  .action((service: string, opts: { lines: string; follow?: boolean }) => {
    const file = logFile(service, stackConfig());
    if (opts.follow) spawn('tail', ['-n', opts.lines, '-F', file], { stdio: 'inherit' });
    else process.stdout.write(`${tail(file, Number(opts.lines))}\n`);
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`infra: ${err instanceof StackError ? err.message : (err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
