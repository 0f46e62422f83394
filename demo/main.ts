/**
 * `npm run demo`: brings the stack up and reports which layers of the platform
 * exist in this checkout, with the URLs to open. (The full demo — every service
 * started, simulated traffic, backfill, live status line — lands with the
 * serving-layer issue.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { REPO_ROOT } from '../common/config';
import { StackError } from '../infra/proc';
import { up } from '../infra/stack';

const LAYERS: { name: string; entry: string; what: string }[] = [
  { name: 'collector', entry: 'ingestion/collector/main.ts', what: 'HTTP → Kafka events.raw / events.dlq' },
  { name: 'simulator', entry: 'ingestion/simulator/cli.ts', what: 'Netflix-like traffic generator' },
  { name: 'speed layer', entry: 'speed-layer/main.ts', what: 'Kafka → Redis approximate counters' },
  { name: 'lake writer', entry: 'batch-layer/lake-writer/main.ts', what: 'Kafka → Parquet lake on S3' },
  { name: 'batch jobs', entry: 'batch-layer/jobs/index.ts', what: 'DuckDB exact views over the lake' },
  { name: 'temporal worker', entry: 'workflows/worker.ts', what: 'hourly/daily schedules, backfills' },
  { name: 'serving layer', entry: 'serving-layer/main.ts', what: 'query API + dashboard' },
];

const program = new Command('demo')
  .description('Start the platform locally: the native stack (Kafka, Redis, MinIO, Temporal) and the layers present in this checkout.')
  .action(async () => {
    const result = await up({ report: (line) => process.stderr.write(`${line}\n`) });
    process.stdout.write('\nStack is up:\n');
    for (const [name, url] of Object.entries(result.urls)) process.stdout.write(`  ${name.padEnd(18)} ${url}\n`);
    process.stdout.write('\nLayers in this checkout:\n');
    for (const layer of LAYERS) {
      const present = fs.existsSync(path.join(REPO_ROOT, layer.entry));
      process.stdout.write(`  ${present ? '✓' : '·'} ${layer.name.padEnd(16)} ${layer.what}${present ? '' : '  (not built yet)'}\n`);
    }
    process.stdout.write('\nStop the stack with: npm run infra:down\n');
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof StackError ? err.message : (err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
