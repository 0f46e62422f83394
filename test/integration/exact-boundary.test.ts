/**
 * Issue 11, points 1, 2 and 4 on the real stack (MinIO, Kafka, DuckDB jobs):
 * - a device clock stamped 2015 is a too_late dead letter at the collector, and
 *   an ancient or dirty published period never drags the served boundary back;
 * - a period whose raw input retention removed refuses to recompute;
 * - pins racing publishes are never lost, a dirty marker leaves the exact view
 *   within seconds, and clearing a marker never loses one written meanwhile.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';
import { dayId, lakePaths, type DirtyMarker, type RunManifest } from '../../common/lake';
import { logger } from '../../common/log';
import { applyRetention, computeWatermark, hoursOfDay, listDirty, runDaily, runHourly, type JobContext } from '../../batch-layer/jobs';
import { s3Of } from '../../batch-layer/jobs/context';
import { deleteObjects, getJson, listObjects, putDirtyMarker } from '../../batch-layer/lake-io';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { BatchStore } from '../../serving-layer/batch-store';
import { merge, type MetricDef, type Source } from '../../serving-layer/merge';
import { toFailure } from '../../workflows/activities';
import { isolatedConfig } from '../support/isolated';
import { seedRaw } from './workflow-support';

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

describe('point 1: device clocks and old periods', () => {
  let cfg: Config;
  let ctx: JobContext;
  let store: BatchStore;
  let collector: Collector;

  beforeAll(async () => {
    cfg = await isolatedConfig('exact1', { COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0', BATCH_DIRTY_POLL_MS: '500' });
    ctx = { cfg, log };
    await seedRaw(cfg, { seed: 11, users: 4, startMs: RECENT_START, endMs: RECENT_END });
    await seedRaw(cfg, { seed: 12, users: 2, startMs: Date.parse(`${ANCIENT}:00:00Z`), endMs: Date.parse(`${ANCIENT}:00:00Z`) + H, offsetBase: 500_000 });
    for (const hour of RECENT) await runHourly(ctx, hour);
    store = await BatchStore.open(cfg, s3Client(cfg), log);
  }, 180_000);

  afterAll(async () => {
    await collector?.stop();
    await store?.close();
  });

  it('dead-letters an event stamped 2015 at the collector (too_late) and corrects a skewed clock by sent_at', async () => {
    collector = buildCollector(cfg);
    const base = (await collector.start()).replace('[::1]', '127.0.0.1');
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
    const consumer = kafkaClient(cfg).consumer({ groupId: `${cfg.kafka.speedGroup}-exact-check` });
    await consumer.connect();
    await consumer.subscribe({ topic: cfg.kafka.rawTopic, fromBeginning: true });
    const got = new Map<string, EventRecord>();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${[...got.keys()]} arrived`)), 30_000);
        void consumer.run({
          eachMessage: async ({ message }) => {
            const rec = JSON.parse(message.value!.toString()) as EventRecord;
            got.set(rec.event_id, rec);
            if (got.size === 2) {
              clearTimeout(timer);
              resolve();
            }
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    expect([...got.keys()].sort()).toEqual(['clock-2015-sent-at', 'on-time']);
    const corrected = got.get('clock-2015-sent-at')!;
    expect(corrected.ts).toBe(corrected.received_at - 30_000);
    expect(corrected.ts).toBeGreaterThan(now - 60_000);
    expect(corrected.device_ts).toBe(Date.UTC(2015, 2, 1, 10, 5));
    expect(corrected.sent_at).toBe(Date.UTC(2015, 2, 1, 10, 5, 30));
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
    // The lake's summary watermark is not dragged back either.
    expect((await computeWatermark(ctx)).hourlyEnd).toBe(RECENT_END);

    // The re-run clears it, and the hour is exact again.
    await runHourly(ctx, RECENT[1]);
    await until('the re-run hour to be exact again', async () => (await sources(store, RECENT_START, RECENT_END))[1] === 'batch', 5_000);
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
    ctx = { cfg, log };
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

describe('point 4: no lost updates on the pin, the watermark and dirty markers', () => {
  let cfg: Config;
  let ctx: JobContext;
  let store: BatchStore;

  beforeAll(async () => {
    cfg = await isolatedConfig('exact4');
    ctx = { cfg, log };
    await seedRaw(cfg, { seed: 41, users: 4, startMs: RECENT_START, endMs: RECENT_END });
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

  it('clearing a marker after a re-run never deletes a marker written meanwhile', async () => {
    const hour = RECENT[2];
    const key = lakePaths.dirtyMarker('hourly', hour);
    const writer = s3Client(cfg);
    await putDirtyMarker(writer, cfg.s3.bucket, { kind: 'hourly', period: hour, markedAt: Date.now() - 60_000, reason: 'late data before the run' });
    // The lake writer lands more late data right after the run read the marker it is about to clear.
    let armed = true;
    let rewrote = 0;
    s3Of(ctx).middlewareStack.add(
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
      s3Of(ctx).middlewareStack.remove('lateWriterDuringClear');
    }
    expect(rewrote).toBe(1);
    const open = await listDirty(ctx);
    expect(open.map((m) => [m.period, m.reason])).toEqual([[hour, 'late data during the clear']]);
  });
});
