/**
 * `npx tsx bench/batch.ts backfill`: days per minute of a daily backfill through
 * the real Temporal dev server and an in-process worker (issue 12 §5). N small
 * days of simulated traffic go into the lake, one backfill of the whole range
 * runs, and the workflow histories give the time spent per activity type.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { Client, Connection } from '@temporalio/client';
import { s3Client } from '../common/clients';
import { loadConfig, type Config } from '../common/config';
import { validateEvent, type EventRecord } from '../common/contract';
import { hourId, lakePaths } from '../common/lake';
import { deleteObjects, listObjects, uploadFile } from '../common/lake-io';
import { ensureBucket } from '../common/topics';
import { writeRawParquet, type RawRow } from '../batch-layer/lake-writer/parquet';
import { simulate } from '../ingestion/simulator/generate';
import { Duck } from '../batch-layer/jobs/duck';
import { generateDay, loadDay } from './batch-synthetic';
import { startBackfill } from '../workflows/cli/backfill';
import { createBatchWorker } from '../workflows/service';
import type { BackfillMode } from '../workflows/types';

interface Options {
  days: string;
  from: string;
  users: string;
  concurrency?: string;
  mode: BackfillMode;
  keep?: boolean;
  eventsPerDay?: string;
  eventsPerUser: string;
}

/** Large days: each generated inside DuckDB (bench/batch-synthetic.ts) and landed as 24 × 6 raw objects. */
async function seedSynthetic(cfg: Config, from: string, days: number, eventsPerDay: number, eventsPerUser: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-backfill-'));
  const duck = await Duck.open({ threads: cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck') });
  let rows = 0;
  try {
    for (let d = 0; d < days; d++) {
      const day = new Date(Date.parse(`${from}T00:00:00Z`) + d * 86_400_000).toISOString().slice(0, 10);
      await generateDay(duck, { day, events: eventsPerDay, users: Math.max(1, Math.round(eventsPerDay / eventsPerUser)), partitions: 6, first: d * 2 * eventsPerDay });
      await loadDay(duck, cfg, dir, { day, partitions: 6 });
      rows += await duck.scalar('SELECT count(*) FROM gen');
      process.stderr.write(`seeded ${day}: ${eventsPerDay.toLocaleString('en')} events (+1 % resent)\n`);
    }
  } finally {
    duck.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** The simulated days as raw objects, one per hour × partition, as the lake writer writes them. */
export async function seed(cfg: Config, startMs: number, endMs: number, users: number): Promise<number> {
  const partitions = 2;
  const offsets = [0, 0];
  const byObject = new Map<string, RawRow[]>();
  let events = 0;
  for (const send of simulate({ seed: 7, users, startMs, endMs, duplicateFraction: 0.01 })) {
    const result = validateEvent(JSON.parse(send.line), endMs + 86_400_000);
    if (!result.ok) continue;
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = record.user_id.length % partitions;
    const k = `${hourId(record.ts)}|${partition}`;
    const rows = byObject.get(k) ?? [];
    rows.push({ record, partition, offset: String(offsets[partition]++) });
    byObject.set(k, rows);
    events++;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-backfill-'));
  try {
    let i = 0;
    for (const [k, rows] of byObject) {
      const [hour, p] = k.split('|');
      const file = path.join(tmp, `${i++}.parquet`);
      await writeRawParquet(rows, file);
      await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, Number(p), rows[0].offset, rows[rows.length - 1].offset), file);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return events;
}

/** Seconds per activity type (scheduled to closed) over every workflow the backfill ran. */
async function activityTimes(client: Client, prefix: string): Promise<{ workflows: number; activities: Record<string, { count: number; seconds: number }> }> {
  const out: Record<string, { count: number; seconds: number }> = {};
  let workflows = 0;
  for await (const wf of client.workflow.list({ query: `WorkflowId STARTS_WITH "${prefix}"` })) {
    workflows++;
    const history = await client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    const scheduled = new Map<string, { type: string; at: number }>();
    for (const e of history.events ?? []) {
      const at = Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);
      const id = String(e.eventId);
      if (e.activityTaskScheduledEventAttributes) scheduled.set(id, { type: e.activityTaskScheduledEventAttributes.activityType?.name ?? '?', at });
      const closed = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskCanceledEventAttributes;
      if (closed) {
        const s = scheduled.get(String(closed.scheduledEventId));
        if (!s) continue;
        const entry = (out[s.type] ??= { count: 0, seconds: 0 });
        entry.count++;
        entry.seconds += (at - s.at) / 1000;
      }
    }
  }
  for (const v of Object.values(out)) v.seconds = +v.seconds.toFixed(2);
  return { workflows, activities: out };
}

async function run(opts: Options): Promise<void> {
  const days = Number(opts.days);
  const users = Number(opts.users);
  const tag = `bench-backfill-${Date.now().toString(36)}`;
  const cfg = loadConfig({
    ...process.env,
    S3_BUCKET: process.env.BENCH_BUCKET ?? 'bench-backfill',
    TEMPORAL_TASK_QUEUE: tag,
    TEMPORAL_WORKFLOW_ID_PREFIX: `${tag}-`,
    TEMPORAL_CREATE_SCHEDULES: 'false',
    WORKER_PORT: '0',
  });
  const s3 = s3Client(cfg);
  await ensureBucket(s3, cfg.s3.bucket);
  const old = (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key);
  if (old.length > 0) await deleteObjects(s3, cfg.s3.bucket, old);
  const startMs = Date.parse(`${opts.from}T00:00:00Z`);
  const t0 = performance.now();
  const events = opts.eventsPerDay
    ? await seedSynthetic(cfg, opts.from, days, Number(opts.eventsPerDay), Number(opts.eventsPerUser))
    : await seed(cfg, startMs, startMs + days * 86_400_000, users);
  const seedSeconds = (performance.now() - t0) / 1000;

  const bw = await createBatchWorker(cfg, { schedules: false });
  const running = bw.run();
  const client = new Client({ connection: await Connection.connect({ address: cfg.temporal.address }), namespace: cfg.temporal.namespace });
  try {
    const last = new Date(startMs + (days - 1) * 86_400_000).toISOString().slice(0, 10);
    const t1 = performance.now();
    const { handle } = await startBackfill(client, cfg, { kind: 'daily', from: opts.from, to: last, mode: opts.mode, ...(opts.concurrency ? { concurrency: Number(opts.concurrency) } : {}) });
    await handle.result();
    const seconds = (performance.now() - t1) / 1000;
    const published = (await listObjects(s3, cfg.s3.bucket, lakePaths.manifestPrefix('daily'))).length;
    const times = await activityTimes(client, cfg.orchestration.workflowIdPrefix);
    process.stdout.write(
      `${JSON.stringify(
        {
          mode: opts.mode,
          days,
          users: opts.eventsPerDay ? Math.round(Number(opts.eventsPerDay) / Number(opts.eventsPerUser)) : users,
          events,
          eventsPerDay: Math.round(events / days),
          seedSeconds: +seedSeconds.toFixed(1),
          publishedDays: published,
          seconds: +seconds.toFixed(1),
          secondsPerDay: +(seconds / days).toFixed(2),
          daysPerMinute: +((days * 60) / seconds).toFixed(2),
          workflows: times.workflows,
          activitySeconds: times.activities,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    bw.shutdown();
    await running.catch(() => undefined);
    await client.connection.close();
    if (!opts.keep) {
      const left = (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key);
      if (left.length > 0) await deleteObjects(s3, cfg.s3.bucket, left);
    }
  }
}

export function backfillCommand(): Command {
  return new Command('backfill')
    .description('Days per minute of a daily backfill of N small simulated days, through the Temporal dev server and an in-process worker.')
    .option('--days <n>', 'days in the range', '5')
    .option('--from <YYYY-MM-DD>', 'first day', '2025-03-01')
    .option('--users <n>', 'simulated users (1,000 make ~7,400 events a day)', '1000')
    .option('--concurrency <n>', 'days in flight (default BACKFILL_CONCURRENCY)')
    .option('--mode <mode>', 'steps (hours of a day in one activity, ahead of the days) or children (an hourly child workflow per hour)', 'steps')
    .option('--events-per-day <n>', 'large synthetic days instead of the simulator: n events each, generated in DuckDB as bench/batch.ts does (e.g. 10000000)')
    .option('--events-per-user <n>', 'with --events-per-day: average events per user', '40')
    .option('--keep', 'leave the lake in the bucket afterwards')
    .addHelpText('after', '\nUses its own bucket (BENCH_BUCKET, default bench-backfill), emptied first, and its own task queue.')
    .action((opts: Options) => run(opts));
}
