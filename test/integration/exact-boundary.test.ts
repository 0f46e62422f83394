/**
 * Issue 11, points 1, 2 and 4 on the real stack (MinIO, Kafka, DuckDB jobs):
 * - a device clock stamped 2015 is a too_late dead letter at the collector, and
 *   an ancient or dirty published period never drags the served boundary back;
 * - a period whose raw input retention removed refuses to recompute;
 * - pins racing publishes are never lost, a dirty marker leaves the exact view
 *   within seconds, and clearing a marker never loses one written meanwhile;
 * - (point 8) every zone has a retention with the same guard, and compaction
 *   runs on a schedule and from the CLI.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';
import { dayId, dayStartMs, lakePaths, type DirtyMarker, type RunManifest } from '../../common/lake';
import { logger } from '../../common/log';
import { applyRetention, computeWatermark, hoursOfDay, jobContext, listDirty, runDaily, runHourly, type JobContext } from '../../batch-layer/jobs';
import { deleteObjects, getJson, listObjects, putDirtyMarker, putJson, stageObjects, uploadFile, withScratchDir } from '../../common/lake-io';
import { Duck } from '../../batch-layer/jobs/duck';
import { writeDlqParquet } from '../../batch-layer/lake-writer/parquet';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { BatchStore } from '../../serving-layer/batch-store';
import { merge, type MetricDef, type Source } from '../../serving-layer/merge';
import { toFailure } from '../../workflows/activities';
import { buildWorkflowBundle } from '../../workflows/service';
import { compactLake } from '../../workflows/workflows';
import { quietTemporalRuntime } from '../support/temporal';
import { isolatedConfig } from '../support/isolated';
import { orchestrationOverrides, seedRaw, startOrchestration, type Orchestration } from './workflow-support';

const run = promisify(execFile);
const TSX = path.join(REPO_ROOT, 'node_modules/.bin/tsx');

process.env.LOG_LEVEL ??= 'warn';

const H = 3_600_000;
const D = 86_400_000;
const log = logger('test');
const TODAY = Math.floor(Date.now() / D) * D;
/** A recent day, well inside the lateness horizon. */
const DAY = dayId(TODAY - 2 * D);
const RECENT = ['05', '06', '07', '08'].map((h) => `${DAY}T${h}`);
const RECENT_START = Date.parse(`${RECENT[0]}:00:00Z`);
const RECENT_END = RECENT_START + RECENT.length * H;
/** The hour a device with a reset clock stamped its event in. */
const ANCIENT = '2015-03-01T10';

/** A metric whose batch side reads nothing: what the merge labels each bucket is all we look at. */
const probe: MetricDef<Record<string, never>, number> = {
  name: 'probe',
  granularities: ['hour'],
  zero: () => 0,
  batch: { period: () => 'hourly', granularities: ['hour'], read: async () => [] },
};
async function sources(store: BatchStore, from: number, to: number): Promise<Source[]> {
  const r = await merge(probe, { from, to, granularity: 'hour', params: {}, groupBy: [] }, { watermark: store.watermark(), now: Date.now(), maxBuckets: 1000 });
  return r.series[0].buckets.map((b) => b.source);
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now() - t0;
}


/** The records on the raw topic that `keep` selects, by event_id, once `count` of them have arrived (30 s at most). */
async function readRaw(cfg: Config, group: string, keep: (r: EventRecord) => boolean, count: number): Promise<Map<string, EventRecord>> {
  const consumer = kafkaClient(cfg).consumer({ groupId: `${cfg.kafka.speedGroup}-${group}` });
  await consumer.connect();
  await consumer.subscribe({ topic: cfg.kafka.rawTopic, fromBeginning: true });
  const got = new Map<string, EventRecord>();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${[...got.keys()]} arrived`)), 30_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          const rec = JSON.parse(message.value!.toString()) as EventRecord;
          if (keep(rec)) got.set(rec.event_id, rec);
          if (got.size === count) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  return got;
}

describe('point 1: device clocks and old periods', () => {
  let cfg: Config;
  let ctx: JobContext;
  let store: BatchStore;
  let collector: Collector;
  let collectorUrl = '';

  beforeAll(async () => {
    cfg = await isolatedConfig('exact1', { COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0', BATCH_DIRTY_POLL_MS: '500' });
    ctx = jobContext(cfg, log);
    await seedRaw(cfg, { seed: 11, users: 4, startMs: RECENT_START, endMs: RECENT_END });
    await seedRaw(cfg, { seed: 12, users: 2, startMs: Date.parse(`${ANCIENT}:00:00Z`), endMs: Date.parse(`${ANCIENT}:00:00Z`) + H, offsetBase: 500_000 });
    for (const hour of RECENT) await runHourly(ctx, hour);
    store = await BatchStore.open(cfg, s3Client(cfg), log);
    collector = buildCollector(cfg);
    collectorUrl = (await collector.start()).replace('[::1]', '127.0.0.1');
  }, 180_000);

  afterAll(async () => {
    await collector?.stop();
    await store?.close();
  });

  it('dead-letters an event stamped 2015 at the collector (too_late) and corrects a skewed clock by sent_at', async () => {
    const base = collectorUrl;
    const now = Date.now();
    const post = async (events: unknown[]): Promise<{ status: string; reason?: string }[]> => {
      for (let i = 0; i < 100; i++) {
        const res = await fetch(`${base}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': cfg.collector.apiKeys[0] }, body: JSON.stringify(events) });
        const body = (await res.json()) as { results?: { status: string; reason?: string }[] };
        if (body.results) return body.results;
        // The collector answers 503 until its producers have connected to Kafka.
        if (res.status !== 503) throw new Error(`collector answered ${res.status}: ${JSON.stringify(body)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error('the collector never connected to Kafka');
    };
    const results = await post([
      { event_id: 'clock-2015', event_type: 'click', user_id: 'u1', timestamp: Date.UTC(2015, 2, 1, 10, 5) },
      // Same reset clock, but the SDK sent its own send time: corrected to about now.
      { event_id: 'clock-2015-sent-at', event_type: 'click', user_id: 'u1', timestamp: Date.UTC(2015, 2, 1, 10, 5), sent_at: Date.UTC(2015, 2, 1, 10, 5, 30) },
      { event_id: 'on-time', event_type: 'click', user_id: 'u1', timestamp: now - 1000 },
    ]);
    expect(results.map((r) => (r.status === 'accepted' ? 'accepted' : r.reason))).toEqual(['too_late', 'accepted', 'accepted']);

    // What reached events.raw: the corrected event sits about now, with its device time kept.
    const got = await readRaw(cfg, 'exact-check', () => true, 2);
    expect([...got.keys()].sort()).toEqual(['clock-2015-sent-at', 'on-time']);
    const corrected = got.get('clock-2015-sent-at')!;
    expect(corrected.ts).toBe(corrected.received_at - 30_000);
    expect(corrected.ts).toBeGreaterThan(now - 60_000);
    expect(corrected.device_ts).toBe(Date.UTC(2015, 2, 1, 10, 5));
    expect(corrected.sent_at).toBe(Date.UTC(2015, 2, 1, 10, 5, 30));
  });

  it('the simulator with skewed device clocks and sent_at: every event is accepted', async () => {
    const env = { ...process.env, LOG_LEVEL: 'warn' };
    const { stdout } = await run(
      TSX,
      ['ingestion/simulator/cli.ts', 'send', '--count', '300', '--rate', '0', '--users', '40', '--skewed-clocks', '0.5', '--url', collectorUrl, '--api-key', cfg.collector.apiKeys[0], '--quiet'],
      { env, cwd: REPO_ROOT },
    );
    const summary = JSON.parse(stdout.trim().split('\n').at(-1)!) as { sent: number; accepted: number; rejected: number };
    expect(summary, JSON.stringify(summary)).toMatchObject({ accepted: summary.sent, rejected: 0 });
    expect(summary.sent).toBeGreaterThanOrEqual(300);
  });

  it('too_late dead letters replay only with --accept-too-late, straight to events.raw, naming the backfill', async () => {
    const today = dayId(Date.now());
    const receivedAt = Date.now() - H;
    const ancient = [1, 2].map((i) => ({ event_id: `replay-2015-${i}`, event_type: 'click', user_id: `u${i}`, timestamp: Date.UTC(2015, 2, 1, 10, i) }));
    await withScratchDir(cfg, async (dir) => {
      const file = path.join(dir, 'dlq.parquet');
      await writeDlqParquet(
        ancient.map((ev, i) => ({ dead: { reason: 'too_late' as const, detail: 'test', received_at: receivedAt, raw: JSON.stringify(ev), index: i }, topic: cfg.kafka.dlqTopic, partition: 0, offset: String(i) })),
        file,
      );
      await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.dlqObject(today, 0, '0', '1'), file);
    });
    const env = { ...process.env, S3_BUCKET: cfg.s3.bucket, TOPIC_RAW: cfg.kafka.rawTopic, TOPIC_DLQ: cfg.kafka.dlqTopic, LOG_LEVEL: 'warn' };
    const cli = (args: string[]) => run(TSX, ['ingestion/dlq/cli.ts', 'replay', '--from', today, '--reason', 'too_late', '--url', collectorUrl, ...args], { env, cwd: REPO_ROOT });

    // Through the collector they are too late again: nothing gets in.
    expect((await cli([])).stdout.trim()).toBe('replayed 2: accepted 0; rejected again: too_late 2');
    // The operator's override.
    const { stdout } = await cli(['--accept-too-late']);
    expect(stdout).toContain(`too_late: produced 2 to ${cfg.kafka.rawTopic}; rejected: none`);
    expect(stdout).toContain('npm run backfill -- --from 2015-03-01 --to 2015-03-01 --kind daily');

    const got = await readRaw(cfg, 'replay-check', (r) => r.event_id.startsWith('replay-2015-'), 2);
    expect(got.get('replay-2015-1')).toMatchObject({ ts: Date.UTC(2015, 2, 1, 10, 1), received_at: receivedAt, user_id: 'u1' });
  });

  it('an ancient published hour does not drag the watermark back: recent hours stay exact', async () => {
    // As late-data reconciliation would have done before the lateness policy: the 2015 hour gets published.
    await runHourly(ctx, ANCIENT);
    const wm = await computeWatermark(ctx);
    expect(wm.hourlyEnd).toBe(RECENT_END);
    await store.sync();
    expect(await sources(store, RECENT_START, RECENT_END)).toEqual(RECENT.map(() => 'batch'));
    expect(store.watermark().hourly.end).toBe(RECENT_END);
    // The 2015 hour itself is still served from its own published run.
    const ancient = Date.parse(`${ANCIENT}:00:00Z`);
    expect(await sources(store, ancient, ancient + H)).toEqual(['batch']);
  });

  it('a dirty hour in the middle says recomputing within seconds; the hours after it stay exact', async () => {
    await store.start();
    const marker: DirtyMarker = { kind: 'hourly', period: RECENT[1], markedAt: Date.now(), reason: 'late data (test)' };
    await putDirtyMarker(s3Client(cfg), cfg.s3.bucket, marker);
    const took = await until('the dirty hour to leave the exact view', async () => (await sources(store, RECENT_START, RECENT_END))[1] !== 'batch', 5_000);
    expect(took).toBeLessThan(5_000);
    expect(await sources(store, RECENT_START, RECENT_END)).toEqual(['batch', 'recomputing', 'batch', 'batch']);
    // What a batch-lag alert watches now that W does not stop there.
    expect(store.firstNotExact('hourly', RECENT_START)).toBe(RECENT_START + H);
    // The lake's summary watermark is not dragged back either.
    expect((await computeWatermark(ctx)).hourlyEnd).toBe(RECENT_END);

    // The re-run clears it, and the hour is exact again.
    await runHourly(ctx, RECENT[1]);
    await until('the re-run hour to be exact again', async () => (await sources(store, RECENT_START, RECENT_END))[1] === 'batch', 5_000);
    expect(store.firstNotExact('hourly', RECENT_START)).toBeNull();
  });
});

describe('the raw contract can grow a column (device_ts, sent_at) without rewriting the master dataset', () => {
  it('an hour whose objects all predate a column reads it as NULL', async () => {
    const cfg = await isolatedConfig('exactcols');
    const ctx: JobContext = jobContext(cfg, log);
    const hour = RECENT[0];
    const seeded = await seedRaw(cfg, { seed: 31, users: 4, startMs: RECENT_START, endMs: RECENT_START + H, partitions: 2 });
    // Rewrite the hour's objects as a writer from before `ip_address` joined the contract would have written them.
    await withScratchDir(cfg, async (dir) => {
      const keys = seeded.get(hour)!.keys;
      const files = await stageObjects(s3Client(cfg), cfg.s3.bucket, keys, dir);
      const duck = await Duck.open();
      try {
        for (const [i, key] of keys.entries()) {
          const partial = path.join(dir, `partial-${i}.parquet`);
          await duck.run(`COPY (SELECT * EXCLUDE (ip_address) FROM read_parquet('${files[i]}')) TO '${partial}' (FORMAT parquet)`);
          await uploadFile(s3Client(cfg), cfg.s3.bucket, key, partial);
        }
      } finally {
        duck.close();
      }
    });
    const manifest = await runHourly(ctx, hour);
    expect(manifest.rowCounts.events).toBe(seeded.get(hour)!.eventIds.size);
  });
});

describe('point 2: raw older than retention is never recomputed from a subset', () => {
  let cfg: Config;
  let ctx: JobContext;
  const OLD = dayId(TODAY - 40 * D);
  const OLD_START = Date.parse(`${OLD}T00:00:00Z`);
  const LATE_HOUR = `${OLD}T13`;

  beforeAll(async () => {
    cfg = await isolatedConfig('exact2');
    ctx = jobContext(cfg, log);
    await seedRaw(cfg, { seed: 21, users: 3, startMs: OLD_START, endMs: OLD_START + D });
    for (const hour of hoursOfDay(OLD)) await runHourly(ctx, hour);
    await runDaily(ctx, OLD, { shards: 1 });
  }, 300_000);

  it('refuses to re-run an hour of a day raw retention removed, with a non-retryable error, keeping its views', async () => {
    const before = (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', LATE_HOUR)))!;
    const removed = await applyRetention(ctx, { rawMaxAgeDays: 30 });
    expect(removed.deletedDays).toEqual([OLD]);
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawDayPrefix(OLD))).toEqual([]);

    // A late event for that hour arrives (as the lake writer would land it) and marks it dirty.
    await seedRaw(cfg, { seed: 22, users: 1, startMs: Date.parse(`${LATE_HOUR}:00:00Z`), endMs: Date.parse(`${LATE_HOUR}:00:00Z`) + 60_000, offsetBase: 900_000 });
    await putDirtyMarker(s3Client(cfg), cfg.s3.bucket, { kind: 'hourly', period: LATE_HOUR, markedAt: Date.now(), reason: 'late data (test)' });

    const err = await runHourly(ctx, LATE_HOUR).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err?.name).toBe('RawInputGoneError');
    expect(err?.message).toMatch(/raw retention removed day/);
    expect(toFailure(err)).toMatchObject({ nonRetryable: true, type: 'RawInputGoneError' });
    const after = (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', LATE_HOUR)))!;
    expect(after.runId).toBe(before.runId);
    expect(after.rowCounts).toEqual(before.rowCounts);
  });

  it('refuses when objects its published run read are gone without a retention record (partial loss)', async () => {
    const day = dayId(TODAY - 3 * D);
    const hour = `${day}T02`;
    const seeded = await seedRaw(cfg, { seed: 23, users: 4, startMs: Date.parse(`${hour}:00:00Z`), endMs: Date.parse(`${hour}:00:00Z`) + H, partitions: 3 });
    await runHourly(ctx, hour);
    const keys = seeded.get(hour)!.keys;
    expect(keys.length).toBeGreaterThan(1);
    await deleteObjects(s3Client(cfg), cfg.s3.bucket, [keys[0]]);
    await expect(runHourly(ctx, hour)).rejects.toMatchObject({ name: 'RawInputGoneError', message: expect.stringContaining(keys[0]) });
  });
});

describe('point 8: every zone has a retention, guarded like raw', () => {
  let cfg: Config;
  let ctx: JobContext;
  const OLD = dayId(TODAY - 40 * D);
  const OLD_START = Date.parse(`${OLD}T00:00:00Z`);

  beforeAll(async () => {
    cfg = await isolatedConfig('exact8r');
    ctx = jobContext(cfg, log);
    await seedRaw(cfg, { seed: 81, users: 3, startMs: OLD_START, endMs: OLD_START + D });
    for (const hour of hoursOfDay(OLD)) await runHourly(ctx, hour);
    await runDaily(ctx, OLD, { shards: 1 });
  }, 300_000);

  it('removes old dead letters and, once raw is gone, old processed events and sessions; a re-run of such a day refuses', async () => {
    const s3 = s3Client(cfg);
    const ancientDlq = dayId(TODAY - 100 * D);
    const recentDlq = dayId(TODAY - 10 * D);
    await withScratchDir(cfg, async (dir) => {
      for (const [i, day] of [ancientDlq, recentDlq].entries()) {
        const file = path.join(dir, `${i}.parquet`);
        await writeDlqParquet([{ dead: { reason: 'schema_violation', detail: 'test', received_at: dayStartMs(day) + 1000, raw: '{}' }, topic: cfg.kafka.dlqTopic, partition: 0, offset: String(i) }], file);
        await uploadFile(s3, cfg.s3.bucket, lakePaths.dlqObject(day, 0, String(i), String(i)), file);
      }
    });
    const daily = (await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('daily', OLD)))!;
    await expect(applyRetention(ctx, { rawMaxAgeDays: 30, processedMaxAgeDays: 30 })).rejects.toThrow(/must be greater than rawMaxAgeDays/);

    const r = await applyRetention(ctx, { rawMaxAgeDays: 30, dlqMaxAgeDays: 90, processedMaxAgeDays: 35 });
    expect(r.deletedDays).toEqual([OLD]);
    expect(r.dlq?.deletedDays).toEqual([ancientDlq]);
    expect((await listObjects(s3, cfg.s3.bucket, lakePaths.rawDlqPrefix)).map((o) => o.key)).toEqual([lakePaths.dlqObject(recentDlq, 0, '1', '1')]);
    expect(r.processed?.deletedDays).toEqual([OLD]);
    for (const table of ['events', 'sessions']) expect(await listObjects(s3, cfg.s3.bucket, `processed/${table}/dt=${OLD}/`)).toEqual([]);
    // Every later day's first_seen history and the served views stay.
    expect(await listObjects(s3, cfg.s3.bucket, `processed/user_daily_activity/dt=${OLD}/`)).toHaveLength(1);
    expect((await listObjects(s3, cfg.s3.bucket, `aggregated/daily_sessions/dt=${OLD}/`)).length).toBe(1);

    await expect(runDaily(ctx, OLD, { shards: 1 })).rejects.toMatchObject({ name: 'RawInputGoneError', message: expect.stringContaining('processed retention removed') });
    expect((await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('daily', OLD)))!.runId).toBe(daily.runId);
  });

  it('removes the batch views of days nothing can recompute any more; serving stops loading them and keeps syncing', async () => {
    const s3 = s3Client(cfg);
    const store = await BatchStore.open(cfg, s3, log);
    try {
      await store.sync();
      expect(store.loadedPeriods('daily')).toEqual([OLD]);
      await expect(applyRetention(ctx, { rawMaxAgeDays: 30, processedMaxAgeDays: 0, aggregatedMaxAgeDays: 38 })).rejects.toThrow(/needs processed retention on/);

      const r = await applyRetention(ctx, { rawMaxAgeDays: 30, processedMaxAgeDays: 35, aggregatedMaxAgeDays: 38 });
      expect(r.aggregated?.deletedDays).toEqual([OLD]);
      expect(await listObjects(s3, cfg.s3.bucket, 'aggregated/')).toEqual([]);
      // The manifests stay: later days read this day's activity through them.
      expect((await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('daily', OLD)))?.period).toBe(OLD);
      expect(await listObjects(s3, cfg.s3.bucket, `processed/user_daily_activity/dt=${OLD}/`)).toHaveLength(1);

      await store.sync();
      expect(store.lastError).toBeNull();
      expect(store.loadedPeriods('daily')).toEqual([]);
      expect(store.loadedPeriods('hourly')).toEqual([]);
      // A fresh serving process does not try to load them either.
      const fresh = await BatchStore.open(cfg, s3, log);
      try {
        await fresh.sync();
        expect(fresh.lastError).toBeNull();
        expect(fresh.loadedPeriods('hourly')).toEqual([]);
      } finally {
        await fresh.close();
      }
    } finally {
      await store.close();
    }
  });
});

describe('point 8: compaction runs on a schedule and from the CLI', () => {
  let cfg: Config;
  let ctx: JobContext;
  let client: Client;
  let orchestration: Orchestration | undefined;
  const YESTERDAY = dayId(TODAY - D);
  const BEFORE = dayId(TODAY - 2 * D);
  const hoursOf = (day: string) => [`${day}T03`, `${day}T04`];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    quietTemporalRuntime();
    const overrides = orchestrationOverrides('exact8c');
    cfg = await isolatedConfig('exact8c', overrides);
    ctx = jobContext(cfg, log);
    env = { ...process.env, ...overrides, S3_BUCKET: cfg.s3.bucket, TEMPORAL_TASK_QUEUE: cfg.temporal.taskQueue, LOG_LEVEL: 'warn' };
    for (const [i, day] of [YESTERDAY, BEFORE].entries()) {
      const start = Date.parse(`${hoursOf(day)[0]}:00:00Z`);
      await seedRaw(cfg, { seed: 80 + i, users: 6, startMs: start, endMs: start + 2 * H, partitions: 3 });
    }
    const bundle = await buildWorkflowBundle();
    orchestration = await startOrchestration(cfg, bundle);
    client = orchestration.client;
  }, 180_000);

  afterAll(() => orchestration?.stop());

  const rawKeys = async (hour: string) => (await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawHourPrefix(hour))).map((o) => path.posix.basename(o.key));

  it('the scheduled run (no day given) compacts the day before, and the hours compute the same', async () => {
    const before = await Promise.all(hoursOf(YESTERDAY).map(async (h) => (await runHourly(ctx, h)).rowCounts));
    const objects = (await Promise.all(hoursOf(YESTERDAY).map(rawKeys))).flat().length;
    expect(objects).toBeGreaterThan(2);
    const r = await client.workflow.execute(compactLake, { taskQueue: cfg.temporal.taskQueue, workflowId: `${cfg.orchestration.workflowIdPrefix}scheduled-compact-test`, args: [] });
    expect(r).toMatchObject({ day: YESTERDAY, hoursCompacted: 2, inputs: objects, outputs: 2 });
    for (const h of hoursOf(YESTERDAY)) expect((await rawKeys(h)).every((k) => k.startsWith('c-'))).toBe(true);
    const after = await Promise.all(hoursOf(YESTERDAY).map(async (h) => (await runHourly(ctx, h)).rowCounts));
    expect(after).toEqual(before);
  });

  it('npm run compact -- --from <day> compacts that day', async () => {
    const objects = (await Promise.all(hoursOf(BEFORE).map(rawKeys))).flat().length;
    expect(objects).toBeGreaterThan(2);
    const { code, stdout } = await run(TSX, ['workflows/cli/compact.ts', '--from', BEFORE], { env, cwd: REPO_ROOT }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: `${e.stdout}${e.stderr}` }),
    );
    expect(stdout, stdout).toContain(`${BEFORE}: 2 hour(s) compacted, ${objects} object(s) merged into 2`);
    expect(code).toBe(0);
    for (const h of hoursOf(BEFORE)) expect((await rawKeys(h)).every((k) => k.startsWith('c-'))).toBe(true);
  });
});

describe('point 4: no lost updates on the pin, the watermark and dirty markers', () => {
  let cfg: Config;
  let ctx: JobContext;
  let store: BatchStore;

  beforeAll(async () => {
    cfg = await isolatedConfig('exact4');
    ctx = jobContext(cfg, log);
    await seedRaw(cfg, { seed: 41, users: 4, startMs: RECENT_START, endMs: RECENT_END + H });
    for (const hour of RECENT) await runHourly(ctx, hour);
    store = await BatchStore.open(cfg, s3Client(cfg), log);
  }, 180_000);

  afterAll(async () => {
    await store?.close();
  });

  it('a loop of pins racing publishes never loses a pin, and every pin is audited', async () => {
    // Publishes keep recomputing the watermark (as every publish does) while the operator pins.
    let publishing = true;
    let publishes = 0;
    const publisher = async () => {
      while (publishing) {
        await computeWatermark(ctx);
        publishes += 1;
      }
    };
    const publishers = Array.from({ length: 4 }, publisher);
    const lost: number[] = [];
    try {
      for (let i = 0; i < 15; i++) {
        const pinned = RECENT_START + (i % 4) * H + i;
        await store.pin(pinned, { keyId: 'k-test', requestId: `req-${i}` });
        await new Promise((r) => setTimeout(r, 100));
        await store.sync();
        if (store.watermark().pinnedEnd !== pinned) lost.push(i);
      }
    } finally {
      publishing = false;
      await Promise.all(publishers);
    }
    expect(publishes).toBeGreaterThan(15);
    expect(lost).toEqual([]);
    const audit = await listObjects(s3Client(cfg), cfg.s3.bucket, '_manifests/audit/pin/');
    expect(audit).toHaveLength(15);
    const last = await getJson<Record<string, unknown>>(s3Client(cfg), cfg.s3.bucket, audit.map((o) => o.key).sort().at(-1)!);
    expect(last).toMatchObject({ keyId: 'k-test', requestId: 'req-14', pinnedEnd: RECENT_START + 2 * H + 14, action: 'pin' });
    // The computed watermark survived the races too.
    expect((await computeWatermark(ctx)).hourlyEnd).toBe(RECENT_END);
    await store.pin(null, { keyId: 'k-test', requestId: 'req-unpin' });
    expect(store.watermark().pinnedEnd).toBeNull();
  });

  it('a pin written by the previous layout (inside watermark.json) is honoured and moved to its own object', async () => {
    const s3 = s3Client(cfg);
    await deleteObjects(s3, cfg.s3.bucket, [lakePaths.pin]);
    const legacy = RECENT_START + 2 * H;
    const current = (await getJson<Record<string, unknown>>(s3, cfg.s3.bucket, lakePaths.watermark))!;
    await putJson(s3, cfg.s3.bucket, lakePaths.watermark, { ...current, pinnedEnd: legacy, hourlyEnd: 0 });
    await store.sync();
    expect(store.watermark().pinnedEnd).toBe(legacy);
    await computeWatermark(ctx);
    expect(await getJson<{ pinnedEnd: number; keyId: string }>(s3, cfg.s3.bucket, lakePaths.pin)).toMatchObject({ pinnedEnd: legacy, keyId: 'migrated' });
    expect((await getJson<Record<string, unknown>>(s3, cfg.s3.bucket, lakePaths.watermark))?.pinnedEnd).toBeUndefined();
    await store.sync();
    expect(store.watermark().pinnedEnd).toBe(legacy);
    await store.pin(null, { keyId: 'k-test', requestId: 'req-unpin-legacy' });
    expect(store.watermark().pinnedEnd).toBeNull();
  });

  it('a publish that lands while another computes the watermark is not overwritten by the older computation', async () => {
    const next = `${DAY}T${String(new Date(RECENT_END).getUTCHours()).padStart(2, '0')}`;
    // A computation with its own S3 client, so only its requests are intercepted.
    const ctxA: JobContext = jobContext({ ...cfg }, log);
    let armed = true;
    ctxA.s3.middlewareStack.add(
      (nextHandler, context) => async (args) => {
        const out = await nextHandler(args);
        if (armed && context.commandName === 'GetObjectCommand' && (args.input as { Key?: string }).Key === lakePaths.watermark) {
          armed = false;
          // Another run publishes the next hour (and moves the watermark) right after A read watermark.json.
          await runHourly(ctx, next);
        }
        return out;
      },
      { step: 'initialize', name: 'publishDuringCompute' },
    );
    await computeWatermark(ctxA);
    expect(armed).toBe(false);
    expect((await getJson<{ hourlyEnd: number }>(s3Client(cfg), cfg.s3.bucket, lakePaths.watermark))?.hourlyEnd).toBe(RECENT_END + H);
  });

  it('clearing a marker after a re-run never deletes a marker written meanwhile', async () => {
    const hour = RECENT[2];
    const key = lakePaths.dirtyMarker('hourly', hour);
    const writer = s3Client(cfg);
    await putDirtyMarker(writer, cfg.s3.bucket, { kind: 'hourly', period: hour, markedAt: Date.now() - 60_000, reason: 'late data before the run' });
    // The lake writer lands more late data right after the run read the marker it is about to clear.
    let armed = true;
    let rewrote = 0;
    ctx.s3.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        if (armed && context.commandName === 'GetObjectCommand' && (args.input as { Key?: string }).Key === key) {
          armed = false;
          await putDirtyMarker(writer, cfg.s3.bucket, { kind: 'hourly', period: hour, markedAt: Date.now(), reason: 'late data during the clear' });
          rewrote += 1;
        }
        return out;
      },
      { step: 'initialize', name: 'lateWriterDuringClear' },
    );
    try {
      await runHourly(ctx, hour);
    } finally {
      ctx.s3.middlewareStack.remove('lateWriterDuringClear');
    }
    expect(rewrote).toBe(1);
    const open = await listDirty(ctx);
    expect(open.map((m) => [m.period, m.reason])).toEqual([[hour, 'late data during the clear']]);
  });
});
