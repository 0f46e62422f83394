/**
 * `npm run demo`: the whole platform on one machine. Brings the native stack up,
 * starts every service as its own process (the same commands an operator runs),
 * simulates the last few days and backfills them through Temporal so the batch
 * views exist from the first minute, then keeps live traffic flowing and prints
 * a one-line status. Ctrl-C stops everything it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { kafkaClient } from '../common/clients';
import { config, REPO_ROOT, type Config } from '../common/config';
import { groupLags } from '../common/topics';
import { StackError, tail } from '../infra/proc';
import { stackPaths } from '../infra/services';
import { down, up } from '../infra/stack';

const DAY_MS = 86_400_000;
const TSX = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');

interface Flags {
  rate: number;
  users: number;
  historyDays: number;
  seed: number;
  duration?: number;
  keepStack: boolean;
}

function positiveInt(name: string, min = 0) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

const say = (line: string) => process.stdout.write(`${line}\n`);

/** A service process of the demo, its output in .stack/logs/demo-<name>.log. */
class Service {
  child?: ChildProcess;
  constructor(
    readonly name: string,
    readonly args: string[],
    readonly logFile: string,
    readonly env: NodeJS.ProcessEnv = {},
    /** A one-shot command (history, backfill): its exit is expected, not news. */
    readonly oneShot = false,
  ) {}

  start(): void {
    const out = fs.openSync(this.logFile, 'a');
    this.child = spawn(TSX, this.args, { cwd: REPO_ROOT, stdio: ['ignore', out, out], env: { ...process.env, ...this.env } });
    fs.closeSync(out);
    this.child.once('exit', (code, signal) => {
      if (!stopping && (!this.oneShot || code !== 0)) say(`\n[demo] ${this.name} exited (${signal ?? `code ${code}`}); last lines of ${this.logFile}:\n${tail(this.logFile, 8)}`);
    });
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((r) => this.child!.once('exit', r));
    this.child!.kill('SIGTERM');
    const timer = setTimeout(() => this.child!.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

let stopping = false;
/** Set once services start, so a failure later still stops what was started. */
let cleanup: ((code: number) => Promise<void>) | undefined;

async function waitHttp(url: string, what: string, timeoutMs = 60_000, svc?: Service): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (svc && !svc.running && svc.child?.exitCode !== undefined && svc.child.exitCode !== null) {
      throw new StackError(`${what} exited during start; log: ${svc.logFile}\n${tail(svc.logFile, 10)}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new StackError(`${what} did not answer ${url} within ${timeoutMs / 1000} s${svc ? `; log: ${svc.logFile}` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

type Admin = ReturnType<ReturnType<typeof kafkaClient>['admin']>;

/** Messages of events.raw a consumer group has not committed yet (all partitions). */
async function groupLag(admin: Admin, cfg: Config, groupId: string): Promise<number> {
  const [lag] = await groupLags(admin, [{ groupId, topics: [cfg.kafka.rawTopic] }]);
  return lag;
}

async function counter(url: string, name: string): Promise<number> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(2000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  return sum;
}

function runToEnd(svc: Service): Promise<number> {
  svc.start();
  return new Promise((resolve) => svc.child!.once('exit', (code) => resolve(code ?? 1)));
}

async function main(flags: Flags): Promise<void> {
  const cfg = config();
  // History older than the lateness horizon would be dead-lettered as too_late, not backfilled.
  const maxHistoryDays = Math.floor(cfg.batch.latenessHorizonMs / 86_400_000) - 1;
  if (flags.historyDays > maxHistoryDays) {
    process.stderr.write(`demo: --history-days ${flags.historyDays} reaches past the lateness horizon (BATCH_LATENESS_HORIZON_MS, ${maxHistoryDays + 1} days): at most ${maxHistoryDays}\n`);
    process.exit(2);
  }
  const logs = stackPaths(cfg).logs;
  const t0 = Date.now();
  say('[demo] bringing the stack up (first run builds it: several minutes)…');
  const stack = await up({ report: (line) => say(`[stack] ${line}`) });
  fs.mkdirSync(logs, { recursive: true });
  const log = (name: string) => path.join(logs, `demo-${name}.log`);

  // The demo rolls lake files faster than production (60 s) so the lake fills visibly.
  const services = [
    new Service('collector', ['ingestion/collector/main.ts'], log('collector')),
    new Service('speed layer', ['speed-layer/main.ts'], log('speed')),
    new Service('lake writer', ['batch-layer/lake-writer/main.ts'], log('lake-writer'), { LAKE_ROLL_AGE_SEC: process.env.LAKE_ROLL_AGE_SEC ?? '15' }),
    new Service('temporal worker', ['workflows/worker.ts'], log('worker')),
    new Service('serving layer', ['serving-layer/main.ts'], log('serving')),
  ];
  const helpers: Service[] = [];
  let admin: Admin | undefined;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('\n[demo] stopping…');
    await Promise.all([...helpers, ...services].map((s) => s.stop()));
    await admin?.disconnect().catch(() => {});
    if (!flags.keepStack && stack.started.length > 0) await down({ only: stack.started, report: (l) => say(`[stack] ${l}`) });
    else say('[demo] the stack is left running (npm run infra:down stops it)');
    process.exit(code);
  };
  cleanup = shutdown;
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  for (const s of services) s.start();
  const collectorUrl = `http://127.0.0.1:${cfg.collector.port}`;
  const servingUrl = `http://127.0.0.1:${cfg.serving.port}`;
  await Promise.all([
    waitHttp(`${collectorUrl}/health`, 'collector', 60_000, services[0]),
    waitHttp(`http://127.0.0.1:${cfg.speed.port}/health`, 'speed layer', 60_000, services[1]),
    waitHttp(`http://127.0.0.1:${cfg.lake.port}/health`, 'lake writer', 60_000, services[2]),
    waitHttp(`${servingUrl}/health`, 'serving layer', 90_000, services[4]),
  ]);
  admin = kafkaClient(cfg, 'demo-status').admin();
  await admin.connect();
  say(`[demo] services up in ${((Date.now() - t0) / 1000).toFixed(0)} s; logs in ${logs}/demo-*.log`);

  if (flags.historyDays > 0) {
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
    const from = new Date(today - flags.historyDays * DAY_MS).toISOString().slice(0, 10);
    const last = new Date(today - DAY_MS).toISOString().slice(0, 10);
    say(`[demo] simulating ${from} .. ${last} (${flags.users} users) through the collector…`);
    const history = new Service('history', ['ingestion/simulator/cli.ts', 'send', '--from', from, '--days', String(flags.historyDays), '--rate', '0',
      '--users', String(flags.users), '--seed', String(flags.seed), '--late', '0.005', '--duplicates', '0.01', '--invalid', '0.005', '--quiet'], log('history'), {}, true);
    helpers.push(history);
    const code = await runToEnd(history);
    if (code !== 0) throw new StackError(`the history simulation failed; log: ${history.logFile}\n${tail(history.logFile, 10)}`);
    say('[demo] waiting for the lake writer to land the history in the lake…');
    for (let lag = await groupLag(admin, cfg, cfg.kafka.lakeGroup); lag > 0; lag = await groupLag(admin, cfg, cfg.kafka.lakeGroup)) {
      await new Promise((r) => setTimeout(r, 2000));
    }
    const backfill = new Service('backfill', ['workflows/cli/backfill.ts', '--from', from, '--to', last, '--kind', 'daily', '--concurrency', '2', '--detach'], log('backfill'), {}, true);
    helpers.push(backfill);
    if ((await runToEnd(backfill)) !== 0) say(`[demo] the backfill did not start; see ${backfill.logFile}`);
    else say(`[demo] backfill of ${from} .. ${last} started: ${tail(backfill.logFile, 3).split('\n').filter((l) => l.includes('http')).pop() ?? cfg.temporal.uiUrl}`);
  }

  const live = new Service('live traffic', ['ingestion/simulator/cli.ts', 'send', '--live', '--rate', String(flags.rate), '--duration', String(flags.duration ?? 365 * 86_400),
    '--users', String(flags.users), '--seed', String(flags.seed + 1), '--late', '0.002', '--duplicates', '0.005', '--invalid', '0.005',
    // About ten requests a second, so the live charts move smoothly.
    '--batch-size', String(Math.min(500, Math.max(1, Math.round(flags.rate / 10)))), '--quiet'], log('live'));
  helpers.push(live);
  live.start();

  say('');
  say('Clickstream demo is running:');
  say(`  Dashboard         http://localhost:${cfg.serving.port}/            (read key: ${cfg.serving.apiKeys[0]})`);
  say(`  Query API docs    http://localhost:${cfg.serving.port}/openapi.json  (docs/api.md)`);
  say(`  Temporal UI       ${cfg.temporal.uiUrl}`);
  say(`  MinIO console     http://localhost:${cfg.stack.minioConsolePort}  (minioadmin / minioadmin)`);
  say(`  Collector         POST ${collectorUrl}/v1/events  (x-api-key: ${cfg.collector.apiKeys[0]})`);
  say(`  Lake from DuckDB  npm run lake -- tables`);
  say('Ctrl-C stops everything the demo started.\n');

  // events/s over the last ~10 s of samples.
  const samples: { at: number; accepted: number }[] = [];
  const deadline = flags.duration ? Date.now() + flags.duration * 1000 : Infinity;
  for (;;) {
    await new Promise((r) => setTimeout(r, 2000));
    if (stopping) return;
    try {
      const accepted = await counter(`${collectorUrl}/metrics`, 'collector_events_accepted_total');
      samples.push({ at: Date.now(), accepted });
      while (samples.length > 6) samples.shift();
      const first = samples[0];
      const rate = samples.length > 1 ? (accepted - first.accepted) / ((Date.now() - first.at) / 1000) : 0;
      const [speedLag, lakeLag, fresh] = await Promise.all([
        groupLag(admin, cfg, cfg.kafka.speedGroup),
        groupLag(admin, cfg, cfg.kafka.lakeGroup),
        fetch(`${servingUrl}/v1/freshness`, { headers: { 'x-api-key': cfg.serving.apiKeys[0] } }).then((r) => r.json() as Promise<Record<string, unknown>>),
      ]);
      const wm = (fresh.watermark as { hourly_end?: number | null } | undefined)?.hourly_end ?? null;
      const speedLagMs = (fresh.freshness as { speed_lag_ms?: number | null } | undefined)?.speed_lag_ms ?? null;
      const line = `events/s ${rate.toFixed(0).padStart(6)} | accepted ${accepted} | lag speed ${speedLag} lake ${lakeLag} | freshness ${speedLagMs ?? '-'} ms | watermark ${wm ? new Date(wm).toISOString().slice(0, 16).replace('T', ' ') : 'none yet'}`;
      process.stdout.write(process.stdout.isTTY ? `\r${line.padEnd(110)}` : `${line}\n`);
    } catch (err) {
      process.stdout.write(`\r[demo] status unavailable: ${(err as Error).message}`.padEnd(110));
    }
    if (Date.now() > deadline) return shutdown(0);
  }
}

new Command('demo')
  .description(
    'Run the whole platform locally: the native stack, collector, speed layer, lake writer, Temporal worker (with schedules) and\n' +
      'serving layer; simulate and backfill the last days so batch views exist at once; then live traffic and a status line.',
  )
  .option('--rate <events/s>', 'live traffic rate', positiveInt('--rate', 1), 200)
  .option('--users <n>', 'simulated users', positiveInt('--users', 1), 1000)
  .option('--history-days <n>', 'complete days before today to simulate and backfill (0 = none)', positiveInt('--history-days'), 2)
  .option('--seed <n>', 'simulator seed', positiveInt('--seed'), 7)
  .option('--duration <s>', 'stop by itself after this many seconds (default: until Ctrl-C)', positiveInt('--duration', 1))
  .option('--keep-stack', 'leave Kafka/Redis/MinIO/Temporal running on exit', false)
  .addHelpText(
    'after',
    '\nService logs: .stack/logs/demo-*.log. Ports and endpoints come from the environment (see common/config.ts), e.g.\n' +
      'COLLECTOR_PORT=8080 SERVING_PORT=8090 TEMPORAL_UI_PORT=8233.',
  )
  .action(async (flags: Flags) => main(flags))
  .parseAsync()
  .catch(async (err: unknown) => {
    process.stderr.write(`demo: ${err instanceof StackError ? err.message : (err as Error).stack ?? String(err)}\n`);
    if (cleanup) await cleanup(1);
    process.exit(1);
  });
