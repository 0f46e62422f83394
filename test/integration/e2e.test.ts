/**
 * The whole platform, end to end, on the real stack (isolated topics, group,
 * Redis prefix, bucket and task queue):
 *
 *   simulator NDJSON ──HTTP──> collector ──> Kafka ──> speed layer ──> Redis ─┐
 *                                              └─────> lake writer ──> S3 ──┤
 *                          Temporal (real worker, real activities) ──> batch views
 *                                                              serving API ◄┘
 *
 * Two past days plus two recent hours (inside the speed retention) are
 * simulated with late, duplicate and invalid sends and every line goes through
 * the collector. Once both consumer groups have consumed everything, a
 * backfill of the two days runs through Temporal. Then, over real HTTP:
 * (a) every exact metric the API returns for the past days equals the plain
 * SQL over the NDJSON (test/support/expected-sql.ts) and says batch/exact;
 * (b) the recent hours come from the speed layer and their counts equal the
 * exact ones; (c) after their hourly runs the watermark moves (pub/sub notice)
 * and the same buckets say batch with unchanged counts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { hllErrorBound } from '../../common/speed-keys';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, bucketStart, dayOf } from '../../common/contract';
import { hourId, lakePaths } from '../../common/lake';
import { hoursOfDay } from '../../batch-layer/jobs';
import { Duck, sqlList, type Row } from '../../batch-layer/jobs/duck';
import { listObjects, stageObjects } from '../../common/lake-io';
import { startLakeWriter, type LakeWriterService as LakeWriter } from '../../batch-layer/lake-writer/service';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { writeNdjson, type SimulatedSend } from '../../ingestion/simulator/generate';
import { startServing, type Serving } from '../../serving-layer/service';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { backfillWorkflowId, periodWorkflowId } from '../../workflows/ids';
import { buildWorkflowBundle, createBatchWorker, type BatchWorker } from '../../workflows/service';
import { backfill, hourlyBatch } from '../../workflows/workflows';
import { defineExpected, expectedSql } from '../support/expected-sql';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
import { highWatermarks, waitAllApplied, waitFor } from './speed-support';
import { orchestrationOverrides, temporalClient } from './workflow-support';
process.env.LOG_LEVEL ??= 'warn';

const H = BUCKET_MS.hour;
const DAY = BUCKET_MS.day;
const NOW = Date.now();
/** P: end of the two past days the daily batch covers; [P, END) are the recent hours only the speed layer has at first. */
const P = bucketStart(NOW - 2 * H, 'day');
const D0 = P - 2 * DAY;
const END = P + 2 * H;
const PAST_DAYS = [dayOf(D0), dayOf(D0 + DAY)];
const PAST_HOURS = PAST_DAYS.flatMap(hoursOfDay);
const RECENT_HOURS = [hourId(P), hourId(P + H)];
const READ_KEY = { 'x-api-key': 'dev-read-key' };

let cfg: Config;
let tmp: string;
let ndjson: string;
const sends: SimulatedSend[] = [];
let duck: Duck;
let collector: Collector;
let collectorUrl: string;
let speed: SpeedLayer;
let lake: LakeWriter;
let serving: Serving;
let batchWorker: BatchWorker;
let workerDone: Promise<void>;
let client: Client;
let redis: Redis;
const timings: Record<string, number> = {};

// ─────────────────────────────── helpers ───────────────────────────────

interface ApiBucket {
  start: number;
  source: 'batch' | 'speed' | 'none';
  exact: boolean;
  covered: boolean;
  value: unknown;
  error?: { relative_std_error: number; ci95: number };
}
interface ApiReply {
  boundary: number | null;
  exact: boolean;
  complete: boolean;
  coverage: Record<'batch' | 'speed' | 'none', number>;
  series: Array<{ key: Record<string, string>; buckets: ApiBucket[] }>;
}

async function api<T = ApiReply>(pathAndQuery: string): Promise<T> {
  const res = await fetch(`${serving.url}${pathAndQuery}`, { headers: READ_KEY });
  const body = (await res.json()) as T;
  expect({ url: pathAndQuery, status: res.status }).toEqual({ url: pathAndQuery, status: 200 });
  return body;
}

const keyId = (key: Record<string, string>) => JSON.stringify(Object.keys(key).sort().map((k) => [k, key[k]]));
const n = (v: unknown): number => Number(v);
const nOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const hourStart = (hour: string) => Date.parse(`${hour}:00:00Z`);
const dayStart = (day: string) => Date.parse(`${day}T00:00:00Z`);
const bucketsOf = (from: number, to: number, g: 'hour' | 'day') => Array.from({ length: (to - from) / BUCKET_MS[g] }, (_, i) => from + i * BUCKET_MS[g]);

/** An API reply's series as { keyId: buckets }, so series order does not matter. */
function bySeries(reply: ApiReply): Record<string, ApiBucket[]> {
  return Object.fromEntries(reply.series.map((s) => [keyId(s.key), s.buckets]));
}

/**
 * What the API must answer when every bucket is a batch bucket: one series per key
 * the expected rows have (always `{}` without a grouping), a value per bucket, the
 * metric's zero where the rows have none.
 */
function batchSeries<V>(rows: Row[], keyCols: readonly string[], buckets: number[], bucketOfRow: (r: Row) => number, valueOf: (r: Row) => V, zero: V | null): Record<string, ApiBucket[]> {
  const series = new Map<string, { key: Record<string, string>; values: Map<number, V> }>();
  if (keyCols.length === 0) series.set(keyId({}), { key: {}, values: new Map() });
  for (const r of rows) {
    const key = Object.fromEntries(keyCols.map((k) => [k, String(r[k])]));
    const id = keyId(key);
    if (!series.has(id)) series.set(id, { key, values: new Map() });
    series.get(id)!.values.set(bucketOfRow(r), valueOf(r));
  }
  return Object.fromEntries(
    [...series].map(([id, s]) => [id, buckets.map((start) => ({ start, source: 'batch', exact: true, covered: true, value: s.values.get(start) ?? zero }))]),
  );
}

/** Exact events per bucket from the expected events, grouped and filtered like the API's parameters. */
async function expectedEvents(g: 'hour' | 'day', from: number, to: number, groupBy: string[], filters: Record<string, string> = {}): Promise<Row[]> {
  const where = [`ts >= ${from}`, `ts < ${to}`, ...Object.entries(filters).map(([d, v]) => `${d} = '${v}'`)];
  return duck.json(
    `SELECT (ts // ${BUCKET_MS[g]}) * ${BUCKET_MS[g]} AS bucket${groupBy.map((d) => `, ${d}`).join('')}, count(*) AS events
     FROM exp_events WHERE ${where.join(' AND ')} GROUP BY ALL`,
  );
}

function query(params: Record<string, string | number>): string {
  return new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
}

// ─────────────────────────────── setup ───────────────────────────────

beforeAll(async () => {
  quietTemporalRuntime();
  cfg = await isolatedConfig('e2e', {
    ...orchestrationOverrides('e2e'),
    TOPIC_RAW_PARTITIONS: '3',
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_PORT: '0',
    SPEED_HOST: '127.0.0.1',
    SPEED_PORT: '0',
    LAKE_WRITER_HOST: '127.0.0.1',
    LAKE_WRITER_PORT: '0',
    // Files roll when the test flushes, not on a timer, so "everything consumed" has one meaning.
    LAKE_ROLL_AGE_SEC: '3600',
    // Only the pub/sub notice of the batch workflows can explain a watermark move within this test.
    SERVING_SYNC_INTERVAL_MS: '600000',
    WORKER_MAX_CONCURRENT_ACTIVITIES: '2',
  });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-it-'));
  ndjson = path.join(tmp, 'sends.ndjson');
  const t0 = Date.now();
  const [bundle] = await Promise.all([
    buildWorkflowBundle(),
    // Half the devices send schema_version 2: every metric below holds over a stream of both versions.
    writeNdjson(ndjson, { seed: 2024, users: 50, startMs: D0, endMs: END, lateFraction: 0.03, duplicateFraction: 0.05, invalidFraction: 0.03, v2Fraction: 0.5 }, (s) => sends.push(s)),
  ]);
  duck = await Duck.open({ threads: 1 });
  // The collector's clock is "now"; every valid simulated event is in the past.
  await defineExpected(duck, ndjson, NOW);
  for (const [table, sql] of [
    ['exp_hourly_users', expectedSql.hourlyUsers(PAST_HOURS)],
    ['exp_hourly_playback', expectedSql.hourlyPlayback(PAST_HOURS)],
    ['exp_daily_sessions', expectedSql.dailySessions()],
    ['exp_clicks_to_play', expectedSql.clicksToPlay()],
    ['exp_top_paths', expectedSql.topPaths()],
    ['exp_binge_users', expectedSql.bingeUsers()],
    ['exp_retention_cohorts', expectedSql.retentionCohorts()],
    ['exp_obt', expectedSql.dailyAggregatesWithDimensions()],
  ]) {
    await duck.run(`CREATE TABLE ${table} AS ${sql}`);
  }

  redis = redisClient(cfg);
  client = await temporalClient(cfg);
  speed = await startSpeedLayer(cfg, { alerts: false });
  lake = await startLakeWriter(cfg);
  collector = buildCollector(cfg);
  collectorUrl = await collector.start();
  serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  batchWorker = await createBatchWorker(cfg, { bundle, schedules: false });
  workerDone = batchWorker.run();
  timings.setup = Date.now() - t0;
}, 180_000);

afterAll(async () => {
  batchWorker?.shutdown();
  await workerDone?.catch(() => undefined);
  await client?.connection.close();
  await collector?.stop();
  await Promise.all([speed?.stop(), lake?.stop(), serving?.stop()]);
  duck?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) await dropIsolated(cfg, redis);
  redis?.disconnect();
  process.stderr.write(`[e2e] timings (ms): ${JSON.stringify(timings)}\n`);
});

// ─────────────────────────────── ingestion ───────────────────────────────

describe('ingestion: every simulated line through the collector', () => {
  it('accepts every valid send and dead-letters every invalid one with its reason', async () => {
    const t0 = Date.now();
    for (const kind of ['valid', 'late', 'duplicate', 'invalid'] as const) expect(sends.filter((s) => s.kind === kind).length, kind).toBeGreaterThan(0);
    let accepted = 0;
    const reasons: Array<[string | undefined, string | undefined]> = [];
    // In send order, one request at a time: "first received wins" is the NDJSON's line order.
    for (let i = 0; i < sends.length; i += 500) {
      const chunk = sends.slice(i, i + 500);
      const res = await fetch(`${collectorUrl}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson', 'x-api-key': cfg.collector.apiKeys[0] },
        body: chunk.map((s) => s.line).join('\n'),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { accepted: number; results: Array<{ index: number; status: string; reason?: string }> };
      accepted += body.accepted;
      body.results.forEach((r, j) => {
        if (chunk[j].kind === 'invalid' || r.status !== 'accepted') reasons.push([chunk[j].expectedReason, r.reason]);
      });
    }
    expect(accepted).toBe(sends.filter((s) => s.kind !== 'invalid').length);
    expect(reasons.length).toBe(sends.filter((s) => s.kind === 'invalid').length);
    for (const [expected, actual] of reasons) expect(actual).toBe(expected);
    timings.ingest = Date.now() - t0;
  });

  it('the speed layer and the lake writer consume everything; dead letters land in the lake', async () => {
    const t0 = Date.now();
    const high = { [cfg.kafka.rawTopic]: await highWatermarks(cfg, cfg.kafka.rawTopic), [cfg.kafka.dlqTopic]: await highWatermarks(cfg, cfg.kafka.dlqTopic) };
    await waitAllApplied(redis, cfg, 120_000);
    await waitFor(
      'the lake writer to upload and commit every offset',
      async () => {
        await lake.flush();
        const committed = lake.status().committed;
        const done = Object.entries(high).every(([topic, parts]) => Object.entries(parts).every(([p, h]) => h === 0 || committed[`${topic}:${p}`] === String(h)));
        return done ? true : undefined;
      },
      120_000,
      500,
    );
    timings.consume = Date.now() - t0;

    const s3 = s3Client(cfg);
    const dlqKeys = (await listObjects(s3, cfg.s3.bucket, lakePaths.rawDlqPrefix)).map((o) => o.key);
    const files = await stageObjects(s3, cfg.s3.bucket, dlqKeys, path.join(tmp, 'dlq'));
    const lakeReasons = await duck.json(`SELECT reason, count(*) AS n FROM read_parquet(${sqlList(files)}) GROUP BY reason ORDER BY reason`);
    const sentReasons = new Map<string, number>();
    for (const s of sends) if (s.kind === 'invalid') sentReasons.set(s.expectedReason!, (sentReasons.get(s.expectedReason!) ?? 0) + 1);
    expect(lakeReasons.map((r) => [r.reason, n(r.n)])).toEqual([...sentReasons].sort(([a], [b]) => (a < b ? -1 : 1)));

    // Both versions in the raw lake: version 2 rows carry app_id and the device's OS and model, version 1 rows NULL.
    const rawKeys = (await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix)).map((o) => o.key);
    const rawFiles = await stageObjects(s3, cfg.s3.bucket, rawKeys, path.join(tmp, 'raw'));
    const versions = await duck.json(
      `SELECT schema_version AS v, count(*) AS n, count(app_id) AS app_ids, count(device_os) AS oses, count(*) FILTER (WHERE device_type <> 'unknown') AS typed
       FROM read_parquet(${sqlList(rawFiles)}, union_by_name = true) GROUP BY 1 ORDER BY 1`,
    );
    expect(versions.map((r) => n(r.v))).toEqual([1, 2]);
    const [v1, v2] = versions;
    expect({ app_ids: n(v1.app_ids), oses: n(v1.oses) }).toEqual({ app_ids: 0, oses: 0 });
    expect({ app_ids: n(v2.app_ids), oses: n(v2.oses) }).toEqual({ app_ids: n(v2.n), oses: n(v2.n) });
    expect(n(v2.typed)).toBeGreaterThan(0);
  });
});

// ─────────────────────────────── batch through Temporal ───────────────────────────────

describe('batch: the past days through Temporal', () => {
  it('a backfill of the two days publishes them, and the serving layer hears the new watermark', async () => {
    const t0 = Date.now();
    const prefix = cfg.orchestration.workflowIdPrefix;
    const result = await client.workflow.execute(backfill, {
      taskQueue: cfg.temporal.taskQueue,
      workflowId: backfillWorkflowId(prefix, 'daily', PAST_DAYS[0], PAST_DAYS[1]),
      args: [{ kind: 'daily', from: PAST_DAYS[0], to: PAST_DAYS[1] }],
    });
    expect(result).toMatchObject({ kind: 'daily', first: PAST_DAYS[0], last: PAST_DAYS[1], total: 2, done: 2 });
    // Each day ran as its own child workflow under its period id (steps mode: its hours inside it).
    const daily = await client.workflow.getHandle(periodWorkflowId(prefix, 'daily', PAST_DAYS[1])).describe();
    expect(daily.status.name).toBe('COMPLETED');
    const fresh = await waitFor('the serving layer to apply the watermark', async () => {
      const f = await api<{ watermark: { hourly_end: number | null; daily_end: number | null } }>('/v1/freshness');
      return f.watermark.hourly_end === P && f.watermark.daily_end === P ? f : undefined;
    });
    expect(fresh.watermark).toMatchObject({ hourly_end: P, daily_end: P, pinned_end: null });
    timings.batch = Date.now() - t0;
  });
});

// ─────────────────────────────── (a) exact below the watermark ───────────────────────────────

describe('serving, past days: every exact metric equals the SQL over the NDJSON', () => {
  const hours = () => bucketsOf(D0, P, 'hour');
  const days = () => bucketsOf(D0, P, 'day');
  const expectAllBatch = (r: ApiReply, buckets: number) => {
    expect({ boundary: r.boundary, exact: r.exact, complete: r.complete, coverage: r.coverage }).toEqual({
      boundary: P,
      exact: true,
      complete: true,
      coverage: { batch: buckets, speed: 0, none: 0 },
    });
  };

  it('events by hour and day, grouped by every dimension and filtered, ALL included', async () => {
    const dims = ['event_type', 'device_type', 'country', 'app_version'];
    const cases: Array<{ g: 'hour' | 'day'; groupBy: string[]; filters?: Record<string, string> }> = [
      { g: 'hour', groupBy: [] },
      ...dims.map((d) => ({ g: 'hour' as const, groupBy: [d] })),
      { g: 'hour', groupBy: dims },
      { g: 'hour', groupBy: ['event_type'], filters: { country: 'US', device_type: 'smart_tv' } },
      { g: 'hour', groupBy: [], filters: { app_version: '8.41.0' } },
      { g: 'day', groupBy: [] },
      { g: 'day', groupBy: ['event_type', 'country'] },
    ];
    let total = 0;
    for (const c of cases) {
      const buckets = c.g === 'hour' ? hours() : days();
      const r = await api(`/v1/metrics/events?${query({ granularity: c.g, from: D0, to: P, ...(c.groupBy.length ? { group_by: c.groupBy.join(',') } : {}), ...c.filters })}`);
      expectAllBatch(r, buckets.length);
      const rows = await expectedEvents(c.g, D0, P, c.groupBy, c.filters);
      const expected = batchSeries(rows, c.groupBy, buckets, (x) => n(x.bucket), (x) => n(x.events), 0);
      if (c.groupBy.length > 0) expect(Object.keys(expected).length).toBeGreaterThan(1);
      expect(bySeries(r)).toEqual(expected);
      if (c.groupBy.length === 0 && !c.filters) total += rows.reduce((s, x) => s + n(x.events), 0);
    }
    // Both the hourly and the daily answer counted every distinct valid event of the two days.
    expect(total).toBe(2 * n((await duck.json(`SELECT count(*) AS n FROM exp_events WHERE ts < ${P}`))[0].n));
  });

  it('active users per hour and per day (exact distinct counts), overall and by device', async () => {
    const devices = (await duck.json(`SELECT DISTINCT device_type FROM exp_events WHERE ts < ${P} ORDER BY 1`)).map((r) => String(r.device_type));
    for (const device of ['ALL', ...devices]) {
      const hourly = await api(`/v1/metrics/active_users?${query({ granularity: 'hour', from: D0, to: P, device_type: device })}`);
      expectAllBatch(hourly, 48);
      const hourRows = await duck.json(`SELECT hour_id, users FROM exp_hourly_users WHERE device_type = '${device}' AND hour_id IN (SELECT unnest(${sqlList(PAST_HOURS)}))`);
      expect(bySeries(hourly)).toEqual(batchSeries(hourRows, [], hours(), (x) => hourStart(String(x.hour_id)), (x) => n(x.users), 0));

      const daily = await api(`/v1/metrics/active_users?${query({ granularity: 'day', from: D0, to: P, device_type: device })}`);
      expectAllBatch(daily, 2);
      const dayRows = await duck.json(`SELECT day, unique_users FROM exp_obt WHERE device_type = '${device}' AND app_version = 'ALL' AND country = 'ALL' AND day < '${dayOf(P)}'`);
      expect(bySeries(daily)).toEqual(batchSeries(dayRows, [], days(), (x) => dayStart(String(x.day)), (x) => n(x.unique_users), 0));
    }
  });

  it('playback counts and rates per hour and day; top content per hour and day', async () => {
    const pb = await duck.json(`SELECT * FROM exp_hourly_playback WHERE content_id = 'ALL' AND hour_id IN (SELECT unnest(${sqlList(PAST_HOURS)}))`);
    const hourly = await api(`/v1/metrics/playback?${query({ granularity: 'hour', from: D0, to: P })}`);
    expectAllBatch(hourly, 48);
    expect(bySeries(hourly)).toEqual(
      batchSeries(pb, [], hours(), (x) => hourStart(String(x.hour_id)), (x) => ({
        plays: n(x.plays),
        pauses: n(x.pauses),
        completes: n(x.completes),
        rebuffers: n(x.rebuffers),
        pause_rate: nOrNull(x.pause_rate),
        completion_rate: nOrNull(x.completion_rate),
      }), null),
    );
    const pbDay = await duck.json(
      `SELECT left(hour_id, 10) AS day, sum(plays) AS plays, sum(pauses) AS pauses, sum(completes) AS completes, sum(rebuffers) AS rebuffers
       FROM exp_hourly_playback WHERE content_id = 'ALL' AND hour_id IN (SELECT unnest(${sqlList(PAST_HOURS)})) GROUP BY ALL`,
    );
    const daily = await api(`/v1/metrics/playback?${query({ granularity: 'day', from: D0, to: P })}`);
    expectAllBatch(daily, 2);
    expect(bySeries(daily)).toEqual(
      batchSeries(pbDay, [], days(), (x) => dayStart(String(x.day)), (x) => {
        const [plays, pauses, completes] = [n(x.plays), n(x.pauses), n(x.completes)];
        return { plays, pauses, completes, rebuffers: n(x.rebuffers), pause_rate: plays === 0 ? null : pauses / plays, completion_rate: plays === 0 ? null : completes / plays };
      }, null),
    );

    for (const [g, limit] of [['hour', 10], ['day', 100]] as const) {
      const size = BUCKET_MS[g];
      const rows = await duck.json(
        `SELECT (CAST(epoch_ms(strptime(hour_id, '%Y-%m-%dT%H')) AS BIGINT) // ${size}) * ${size} AS bucket, content_id, sum(plays) AS plays
         FROM exp_hourly_playback WHERE content_id <> 'ALL' AND content_id IS NOT NULL AND hour_id IN (SELECT unnest(${sqlList(PAST_HOURS)}))
         GROUP BY ALL HAVING sum(plays) > 0`,
      );
      const ranked = new Map<number, Array<{ content_id: string; plays: number }>>();
      for (const x of rows) ranked.set(n(x.bucket), [...(ranked.get(n(x.bucket)) ?? []), { content_id: String(x.content_id), plays: n(x.plays) }]);
      for (const items of ranked.values()) items.sort((a, b) => b.plays - a.plays || (a.content_id < b.content_id ? -1 : 1)).splice(limit);
      const r = await api(`/v1/metrics/top_content?${query({ granularity: g, from: D0, to: P, limit })}`);
      expectAllBatch(r, g === 'hour' ? 48 : 2);
      const buckets = g === 'hour' ? hours() : days();
      expect(bySeries(r)).toEqual(batchSeries([...ranked].map(([bucket, items]) => ({ bucket, items })), [], buckets, (x) => n(x.bucket), (x) => ({ items: x.items }), { items: [] }));
    }
  });

  it('daily sessions, clicks-to-play, top paths, binge users and retention cohorts', async () => {
    const past = `day < '${dayOf(P)}'`;
    const sessionsValue = (x: Row) => ({
      sessions: n(x.sessions),
      avg_duration_ms: nOrNull(x.avg_duration_ms),
      median_duration_ms: nOrNull(x.median_duration_ms),
      bounce_rate: nOrNull(x.bounce_rate),
      avg_events_per_session: nOrNull(x.avg_events_per_session),
    });
    const sessionRows = await duck.json(`SELECT * FROM exp_daily_sessions WHERE ${past}`);
    const all = await api(`/v1/metrics/daily_sessions?${query({ granularity: 'day', from: D0, to: P })}`);
    expectAllBatch(all, 2);
    expect(bySeries(all)).toEqual(batchSeries(sessionRows.filter((x) => x.device_type === 'ALL'), [], days(), (x) => dayStart(String(x.day)), sessionsValue, null));
    const byDevice = await api(`/v1/metrics/daily_sessions?${query({ granularity: 'day', from: D0, to: P, group_by: 'device_type' })}`);
    const zeroSessions = { sessions: 0, avg_duration_ms: null, median_duration_ms: null, bounce_rate: null, avg_events_per_session: null };
    expect(bySeries(byDevice)).toEqual(batchSeries(sessionRows.filter((x) => x.device_type !== 'ALL'), ['device_type'], days(), (x) => dayStart(String(x.day)), sessionsValue, zeroSessions));

    const ctp = await api(`/v1/metrics/clicks_to_play?${query({ granularity: 'day', from: D0, to: P })}`);
    expectAllBatch(ctp, 2);
    expect(bySeries(ctp)).toEqual(
      batchSeries(await duck.json(`SELECT * FROM exp_clicks_to_play WHERE ${past}`), [], days(), (x) => dayStart(String(x.day)), (x) => ({
        play_sessions: n(x.play_sessions),
        no_play_sessions: n(x.no_play_sessions),
        avg_clicks_to_play: nOrNull(x.avg_clicks_to_play),
        histogram: [...Array.from({ length: 10 }, (_, i) => ({ clicks: String(i), sessions: n(x[`clicks_${i}`]) })), { clicks: '10+', sessions: n(x.clicks_10_plus) }],
      }), null),
    );

    const paths = await duck.json(`SELECT day, rank, path, sessions FROM exp_top_paths WHERE ${past} ORDER BY day, rank`);
    const perDay = (rows: Row[]) => PAST_DAYS.map((day) => ({ day, items: rows.filter((x) => x.day === day) }));
    const tp = await api(`/v1/metrics/top_paths?${query({ granularity: 'day', from: D0, to: P })}`);
    expectAllBatch(tp, 2);
    expect(bySeries(tp)).toEqual(
      batchSeries(perDay(paths), [], days(), (x) => dayStart(String(x.day)), (x) => ({
        paths: (x.items as Row[]).map((p) => ({ rank: n(p.rank), path: String(p.path), sessions: n(p.sessions) })),
      }), null),
    );

    const binge = await duck.json(`SELECT day, user_id FROM exp_binge_users WHERE ${past} ORDER BY day, user_id`);
    expect(binge.length).toBeGreaterThan(0);
    const bu = await api(`/v1/metrics/binge_users?${query({ granularity: 'day', from: D0, to: P, limit: 1000 })}`);
    expectAllBatch(bu, 2);
    expect(bySeries(bu)).toEqual(
      batchSeries(perDay(binge), [], days(), (x) => dayStart(String(x.day)), (x) => ({ count: (x.items as Row[]).length, users: (x.items as Row[]).map((u) => String(u.user_id)) }), null),
    );

    // Cohorts as of the last day before the daily watermark.
    const asOf = PAST_DAYS[1];
    const cohorts = await duck.json(`SELECT * FROM exp_retention_cohorts WHERE as_of_day = '${asOf}'`);
    const ret = await api(`/v1/metrics/retention?${query({ granularity: 'day', from: D0, to: P })}`);
    expectAllBatch(ret, 2);
    expect(bySeries(ret)).toEqual(
      batchSeries(cohorts, [], days(), (x) => dayStart(String(x.cohort_day)), (x) => ({
        as_of_day: asOf,
        cohort_size: n(x.cohort_size),
        retained_d1: nOrNull(x.retained_d1),
        retained_d7: nOrNull(x.retained_d7),
        retained_d14: nOrNull(x.retained_d14),
        retained_d28: nOrNull(x.retained_d28),
        churned: n(x.churned),
      }), null),
    );
  });

  it('the one big table: every grouping set, with ALL roll-ups and dimension filters', async () => {
    const obtValue = (x: Row) => ({
      total_events: n(x.total_events),
      total_installs: n(x.total_installs),
      total_views: n(x.total_views),
      total_plays: n(x.total_plays),
      total_sessions: n(x.total_sessions),
      unique_users: n(x.unique_users),
    });
    const zero = { total_events: 0, total_installs: 0, total_views: 0, total_plays: 0, total_sessions: 0, unique_users: 0 };
    const levels = [[], ['device_type'], ['country'], ['device_type', 'country'], ['device_type', 'app_version', 'country']];
    let rowsSeen = 0;
    for (const groupBy of levels) {
      const r = await api(`/v1/metrics/obt?${query({ granularity: 'day', from: D0, to: P, ...(groupBy.length ? { group_by: groupBy.join(',') } : {}) })}`);
      expectAllBatch(r, 2);
      const where = ['device_type', 'app_version', 'country'].map((d) => (groupBy.includes(d) ? `${d} <> 'ALL'` : `${d} = 'ALL'`));
      const rows = await duck.json(`SELECT * FROM exp_obt WHERE day < '${dayOf(P)}' AND ${where.join(' AND ')}`);
      rowsSeen += rows.length;
      expect(bySeries(r)).toEqual(batchSeries(rows, groupBy, days(), (x) => dayStart(String(x.day)), obtValue, zero));
    }
    expect(rowsSeen).toBe(n((await duck.json(`SELECT count(*) AS n FROM exp_obt WHERE day < '${dayOf(P)}'`))[0].n));
    // A filter on a value (and ALL for a roll-up) picks the same rows.
    const [row] = await duck.json(`SELECT * FROM exp_obt WHERE day = '${PAST_DAYS[1]}' AND device_type = 'smart_tv' AND app_version = 'ALL' AND country = 'US'`);
    const f = await api(`/v1/metrics/obt?${query({ granularity: 'day', from: D0 + DAY, to: P, device_type: 'smart_tv', country: 'US', app_version: 'ALL' })}`);
    expect(f.series[0].buckets[0]).toEqual({ start: D0 + DAY, source: 'batch', exact: true, covered: true, value: row ? obtValue(row) : zero });
  });
});

// ─────────────────────────────── (b) speed above the watermark, (c) the watermark moves ───────────────────────────────

describe('serving, recent hours: speed above the watermark, then batch after their hourly runs', () => {
  const speedGroups = [[], ['event_type'], ['device_type'], ['country']];
  const before = new Map<string, ApiReply>();
  const eventsUrl = (groupBy: string[]) => `/v1/metrics/events?${query({ granularity: 'hour', from: P, to: END, ...(groupBy.length ? { group_by: groupBy.join(',') } : {}) })}`;
  const playbackUrl = `/v1/metrics/playback?${query({ granularity: 'hour', from: P, to: END })}`;
  const topUrl = `/v1/metrics/top_content?${query({ granularity: 'hour', from: P, to: END, limit: 100 })}`;
  const usersUrl = `/v1/metrics/active_users?${query({ granularity: 'hour', from: P, to: END })}`;
  const recent = () => bucketsOf(P, END, 'hour');

  /** Exact values of the recent hours, labelled with the layer expected to answer them. */
  async function expectedRecent(source: 'speed' | 'batch') {
    const label = (series: Record<string, ApiBucket[]>) =>
      Object.fromEntries(Object.entries(series).map(([k, bs]) => [k, bs.map((b) => ({ ...b, source, exact: source === 'batch' }))]));
    const events = new Map<string, Record<string, ApiBucket[]>>();
    for (const g of speedGroups) events.set(g.join(','), label(batchSeries(await expectedEvents('hour', P, END, g), g, recent(), (x) => n(x.bucket), (x) => n(x.events), 0)));
    const pb = await duck.json(
      `SELECT (ts // ${H}) * ${H} AS bucket, count(*) FILTER (WHERE event_type = 'video_play') AS plays, count(*) FILTER (WHERE event_type = 'video_pause') AS pauses,
              count(*) FILTER (WHERE event_type = 'video_complete') AS completes, count(*) FILTER (WHERE event_type = 'rebuffer') AS rebuffers
       FROM exp_events WHERE ts >= ${P} AND ts < ${END} GROUP BY ALL`,
    );
    const playback = label(
      batchSeries(pb, [], recent(), (x) => n(x.bucket), (x) => {
        const [plays, pauses, completes] = [n(x.plays), n(x.pauses), n(x.completes)];
        return { plays, pauses, completes, rebuffers: n(x.rebuffers), pause_rate: plays === 0 ? null : pauses / plays, completion_rate: plays === 0 ? null : completes / plays };
      }, null),
    );
    const top = await duck.json(
      `SELECT (ts // ${H}) * ${H} AS bucket, content_id, count(*) AS plays FROM exp_events
       WHERE event_type = 'video_play' AND content_id IS NOT NULL AND ts >= ${P} AND ts < ${END} GROUP BY ALL`,
    );
    const ranked = new Map<number, Array<{ content_id: string; plays: number }>>();
    for (const x of top) ranked.set(n(x.bucket), [...(ranked.get(n(x.bucket)) ?? []), { content_id: String(x.content_id), plays: n(x.plays) }]);
    for (const items of ranked.values()) items.sort((a, b) => b.plays - a.plays || (a.content_id < b.content_id ? -1 : 1));
    const topContent = label(batchSeries([...ranked].map(([bucket, items]) => ({ bucket, items })), [], recent(), (x) => n(x.bucket), (x) => ({ items: x.items }), { items: [] }));
    const users = new Map((await duck.json(`SELECT (ts // ${H}) * ${H} AS bucket, count(DISTINCT user_id) AS users FROM exp_events WHERE ts >= ${P} AND ts < ${END} GROUP BY ALL`)).map((x) => [n(x.bucket), n(x.users)]));
    return { events, playback, topContent, users };
  }

  it('(b) buckets after the watermark come from the speed layer and equal the exact counts', async () => {
    const all = await api(`/v1/metrics/events?${query({ granularity: 'hour', from: D0, to: END })}`);
    expect({ boundary: all.boundary, coverage: all.coverage }).toEqual({ boundary: P, coverage: { batch: 48, speed: 2, none: 0 } });

    const expected = await expectedRecent('speed');
    expect(Object.values(expected.events.get('')!)[0].reduce((s, b) => s + (b.value as number), 0)).toBeGreaterThan(0);
    for (const g of speedGroups) {
      const r = await api(eventsUrl(g));
      expect({ boundary: r.boundary, coverage: r.coverage }).toEqual({ boundary: P, coverage: { batch: 0, speed: 2, none: 0 } });
      expect(bySeries(r)).toEqual(expected.events.get(g.join(',')));
      before.set(eventsUrl(g), r);
    }
    const pb = await api(playbackUrl);
    expect(bySeries(pb)).toEqual(expected.playback);
    before.set(playbackUrl, pb);
    const top = await api(topUrl);
    expect(bySeries(top)).toEqual(expected.topContent);
    before.set(topUrl, top);

    // Distinct users are HyperLogLog estimates: within 2 % (or one user) of the exact count, with their error bound.
    const users = await api(usersUrl);
    for (const b of users.series[0].buckets) {
      const exact = expected.users.get(b.start) ?? 0;
      expect(b).toMatchObject({ source: 'speed', exact: false, covered: true });
      expect(Math.abs((b.value as number) - exact)).toBeLessThanOrEqual(Math.max(1, Math.ceil(exact * 0.02)));
      expect(b.error).toMatchObject({ relative_std_error: hllErrorBound(b.value as number).relativeStdError, ci95: hllErrorBound(b.value as number).ci95 });
    }
  });

  it('(c) the hourly runs of those hours move the watermark; the same buckets switch to batch with unchanged counts', async () => {
    const t0 = Date.now();
    const prefix = cfg.orchestration.workflowIdPrefix;
    for (const hour of RECENT_HOURS) {
      const summary = await client.workflow.execute(hourlyBatch, { taskQueue: cfg.temporal.taskQueue, workflowId: periodWorkflowId(prefix, 'hourly', hour), args: [hour] });
      expect(summary.period).toBe(hour);
    }
    // The serving layer polls every 10 minutes here: only the workflows' pub/sub notice can move it this fast.
    await waitFor('the serving layer to apply the new hourly watermark', async () => {
      const f = await api<{ watermark: { hourly_end: number | null } }>('/v1/freshness');
      return f.watermark.hourly_end === END ? true : undefined;
    });
    const fresh = await api<{ watermark: { hourly_end: number; daily_end: number } }>('/v1/freshness');
    expect(fresh.watermark).toMatchObject({ hourly_end: END, daily_end: P });
    timings.hourly = Date.now() - t0;

    const expected = await expectedRecent('batch');
    for (const g of speedGroups) {
      const r = await api(eventsUrl(g));
      expect({ boundary: r.boundary, exact: r.exact, coverage: r.coverage }).toEqual({ boundary: END, exact: true, coverage: { batch: 2, speed: 0, none: 0 } });
      expect(bySeries(r)).toEqual(expected.events.get(g.join(',')));
      // Unchanged counts: the batch answer is the speed answer, relabelled.
      const was = bySeries(before.get(eventsUrl(g))!);
      expect(Object.fromEntries(Object.entries(bySeries(r)).map(([k, bs]) => [k, bs.map((b) => b.value)]))).toEqual(
        Object.fromEntries(Object.entries(was).map(([k, bs]) => [k, bs.map((b) => b.value)])),
      );
    }
    for (const [url, exp] of [[playbackUrl, expected.playback], [topUrl, expected.topContent]] as const) {
      const r = await api(url);
      expect(bySeries(r)).toEqual(exp);
      expect(r.series.map((s) => s.buckets.map((b) => b.value))).toEqual(before.get(url)!.series.map((s) => s.buckets.map((b) => b.value)));
    }
    const users = await api(usersUrl);
    expect(users.series[0].buckets).toEqual(recent().map((start) => ({ start, source: 'batch', exact: true, covered: true, value: expected.users.get(start) ?? 0 })));
    // The whole range is now one exact answer.
    const all = await api(`/v1/metrics/events?${query({ granularity: 'hour', from: D0, to: END })}`);
    expect({ boundary: all.boundary, exact: all.exact, coverage: all.coverage }).toEqual({ boundary: END, exact: true, coverage: { batch: 50, speed: 0, none: 0 } });
  });
});
