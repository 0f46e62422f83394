/**
 * The serving layer on the real stack (isolated bucket, topic and key prefix).
 * Batch side: a simulated dataset is written to the raw lake as Parquet and the
 * real batch jobs publish it (hourly × 25, daily × 1). Speed side: the same
 * events are produced to Kafka and applied by the real speed layer. Then the
 * API must answer batch buckets exactly (equal to the events / the published
 * tables), label speed buckets, move buckets to batch when the watermark moves
 * (pub/sub notice), honour a pin, and fail clearly on bad requests.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, bucketStart, dayOf, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type RunManifest } from '../../common/lake';
import { hllErrorBound, speedKeys } from '../../common/speed-keys';
import { logger } from '../../common/log';
import { getJson, stageObjects } from '../../common/lake-io';
import { hoursOfDay, jobContext, runDaily, type JobContext } from '../../batch-layer/jobs';
import { Duck, sqlList } from '../../batch-layer/jobs/duck';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { lambdaFixture } from './serving-support';
import { produce, toMessages, waitAllApplied, waitFor } from './speed-support';

const H = BUCKET_MS.hour;
const DAY = BUCKET_MS.day;
const NOW = Date.now();
const TODAY = bucketStart(NOW, 'day');
/** D: the day the batch layer fully publishes (hourly × 24 + daily). */
const D = TODAY - 2 * DAY;
/** Y: yesterday; its first two hours are only in the speed layer until the test publishes Y 00. */
const Y = TODAY - DAY;
const END = Y + 2 * H;
const KEY = { 'x-api-key': 'dev-read-key' };

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let speed: SpeedLayer;
let serving: Serving;
let redis: Redis;
let duck: Duck;
let distinct: EventRecord[] = [];

async function get(pathAndQuery: string, headers: Record<string, string> = KEY): Promise<{ status: number; body: any }> {
  const res = await fetch(`${serving.url}${pathAndQuery}`, { headers });
  return { status: res.status, body: await res.json() };
}

const inHour = (r: EventRecord, h: number) => r.ts >= h && r.ts < h + H;
const count = (pred: (r: EventRecord) => boolean) => distinct.filter(pred).length;
const users = (pred: (r: EventRecord) => boolean) => new Set(distinct.filter(pred).map((r) => r.user_id)).size;

let publishHour: (hour: string) => Promise<void>;

beforeAll(async () => {
  cfg = await isolatedConfig('serving', { SPEED_PORT: '0', SERVING_SYNC_INTERVAL_MS: '600000', BATCH_SHARDS: '1' });
  ctx = jobContext(cfg, logger('serving-test'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'serving-it-'));
  const fixture = lambdaFixture(cfg, ctx, tmp, { seed: 7, users: 25, startMs: D, endMs: END, now: NOW });
  ({ distinct, publishHour } = fixture);

  // Speed layer: the same events through Kafka.
  redis = redisClient(cfg);
  speed = await startSpeedLayer(cfg, { alerts: false });
  await produce(cfg, toMessages(fixture.all));
  await waitAllApplied(redis, cfg, 120_000);

  // Batch layer: D's 24 hours and D's daily run (Y's hours stay unpublished for now).
  for (const hour of hoursOfDay(dayOf(D))) await publishHour(hour);
  await runDaily(ctx, dayOf(D), { shards: 1 });

  serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  duck = await Duck.open({ threads: 1 });
}, 600_000);

afterAll(async () => {
  await serving?.stop();
  await speed?.stop();
  duck?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) await dropIsolated(cfg, redis);
  redis?.disconnect();
});

/** Rows of a published daily table of D, straight from its Parquet object. */
async function published(table: string): Promise<Record<string, unknown>[]> {
  const manifest = await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('daily', dayOf(D)));
  const [file] = await stageObjects(s3Client(cfg), cfg.s3.bucket, [manifest!.outputs[table]], path.join(tmp, 'pub'));
  return duck.json(`SELECT * FROM read_parquet(${sqlList([file])})`);
}

describe('serving: batch below W, speed above it', () => {
  it('serves D hourly from batch (exact, equal to the events) and Y from speed (labelled approximate)', async () => {
    const r = await get(`/v1/metrics/events?granularity=hour&from=${D}&to=${END}`);
    expect(r.status).toBe(200);
    expect(r.body.watermark.hourly_end).toBe(D + DAY);
    expect(r.body.boundary).toBe(D + DAY);
    const buckets = r.body.series[0].buckets as Array<{ start: number; source: string; exact: boolean; covered: boolean; value: number }>;
    expect(buckets).toHaveLength(26);
    for (const b of buckets.slice(0, 24)) {
      expect(b).toMatchObject({ source: 'batch', exact: true, covered: true, value: count((e) => inHour(e, b.start)) });
    }
    for (const b of buckets.slice(24)) {
      // Speed counts are exactly-once, so they equal the exact value, but they are labelled approximate.
      expect(b).toMatchObject({ source: 'speed', exact: false, covered: true, value: count((e) => inHour(e, b.start)) });
    }
    expect(r.body.coverage).toEqual({ batch: 24, speed: 2, none: 0 });
    expect(r.body.freshness.speed_applied_at).toBeGreaterThan(0);
  });

  it('groups by event_type on both sides of W', async () => {
    const r = await get(`/v1/metrics/events?granularity=hour&from=${D + 22 * H}&to=${END}&group_by=event_type`);
    expect(r.status).toBe(200);
    for (const s of r.body.series) {
      for (const b of s.buckets) expect(b.value).toBe(count((e) => e.event_type === s.key.event_type && inHour(e, b.start)));
    }
    expect(new Set(r.body.series.map((s: any) => s.key.event_type))).toEqual(new Set(distinct.filter((e) => e.ts >= D + 22 * H).map((e) => e.event_type)));
  });

  it('filters by app_version from batch; speed keeps no app_version, so its buckets are not covered (not zero)', async () => {
    const version = distinct[0].app_version;
    const r = await get(`/v1/metrics/events?granularity=hour&from=${D + 23 * H}&to=${END}&app_version=${encodeURIComponent(version)}`);
    const [b23, y0, y1] = r.body.series[0].buckets;
    expect(b23).toMatchObject({ source: 'batch', value: count((e) => e.app_version === version && inHour(e, D + 23 * H)) });
    expect(y0).toMatchObject({ source: 'none', covered: false, value: null });
    expect(y1).toMatchObject({ source: 'none', covered: false, value: null });
  });

  it('answers minute buckets from speed and marks buckets past both layers as not covered', async () => {
    const r = await get(`/v1/metrics/events?granularity=minute&from=${Y}&to=${Y + 10 * 60_000}`);
    for (const b of r.body.series[0].buckets) expect(b).toMatchObject({ source: 'speed', value: count((e) => e.ts >= b.start && e.ts < b.start + 60_000) });
    const before = await get(`/v1/metrics/events?granularity=hour&from=${D - 2 * H}&to=${D}`);
    for (const b of before.body.series[0].buckets) expect(b).toEqual({ start: b.start, source: 'none', exact: false, covered: false, value: null });
    expect(before.body.complete).toBe(false);
  });

  it('active users: exact HAU/DAU from batch, HLL estimates with error bounds from speed', async () => {
    const hours = await get(`/v1/metrics/active_users?granularity=hour&from=${D + 23 * H}&to=${END}`);
    const [d23, y0] = hours.body.series[0].buckets;
    expect(d23).toMatchObject({ source: 'batch', exact: true, value: users((e) => inHour(e, D + 23 * H)) });
    expect(d23.error).toBeUndefined();
    const exactY0 = users((e) => inHour(e, Y));
    expect(y0).toMatchObject({ source: 'speed', exact: false });
    expect(Math.abs(y0.value - exactY0)).toBeLessThanOrEqual(Math.ceil(exactY0 * 0.02));
    // The measured bound (bench/hll-error.ts), and the truth inside it.
    expect(y0.error).toEqual({ method: 'hyperloglog', ...(({ relativeStdError, ci95 }) => ({ relative_std_error: relativeStdError, ci95 }))(hllErrorBound(y0.value)) });
    expect(Math.abs(y0.value - exactY0)).toBeLessThanOrEqual(y0.error.ci95);
    const day = await get(`/v1/metrics/active_users?granularity=day&from=${D}&to=${D + DAY}`);
    expect(day.body.series[0].buckets[0]).toMatchObject({ source: 'batch', exact: true, value: users((e) => e.ts >= D && e.ts < D + DAY) });
  });

  it('active users per country: exact per day from the one big table, not covered where only speed holds the day, 400 below a day', async () => {
    const { country, device_type: device } = distinct[0];
    const onD = (e: EventRecord) => e.ts >= D && e.ts < D + DAY;
    const r = await get(`/v1/metrics/active_users?granularity=day&from=${D}&to=${Y + DAY}&country=${country}`);
    const [d, y] = r.body.series[0].buckets;
    expect(d).toMatchObject({ source: 'batch', exact: true, value: users((e) => onD(e) && e.country === country) });
    expect(d.value).toBeLessThan(users(onD));
    // The HyperLogLogs keep no country: the speed-only day is unknown, not a per-device or overall estimate.
    expect(y).toMatchObject({ source: 'none', covered: false, value: null });
    const both = await get(`/v1/metrics/active_users?granularity=day&from=${D}&to=${D + DAY}&country=${country}&device_type=${device}`);
    expect(both.body.series[0].buckets[0]).toMatchObject({ source: 'batch', value: users((e) => onD(e) && e.country === country && e.device_type === device) });
    const hourly = await get(`/v1/metrics/active_users?granularity=hour&from=${D}&to=${D + DAY}&country=${country}`);
    expect(hourly).toMatchObject({ status: 400, body: { parameter: 'country' } });
  });

  it('playback and rates per hour equal the events; top content ranks plays', async () => {
    const r = await get(`/v1/metrics/playback?granularity=hour&from=${D}&to=${END}`);
    for (const b of r.body.series[0].buckets) {
      const plays = count((e) => e.event_type === 'video_play' && inHour(e, b.start));
      const pauses = count((e) => e.event_type === 'video_pause' && inHour(e, b.start));
      const completes = count((e) => e.event_type === 'video_complete' && inHour(e, b.start));
      expect(b.value).toMatchObject({ plays, pauses, completes, rebuffers: count((e) => e.event_type === 'rebuffer' && inHour(e, b.start)) });
      expect(b.value.pause_rate).toBe(plays === 0 ? null : pauses / plays);
      expect(b.value.completion_rate).toBe(plays === 0 ? null : completes / plays);
    }
    const top = await get(`/v1/metrics/top_content?granularity=day&from=${D}&to=${D + DAY}&limit=5`);
    const plays = new Map<string, number>();
    for (const e of distinct) if (e.event_type === 'video_play' && e.content_id && e.ts >= D && e.ts < D + DAY) plays.set(e.content_id, (plays.get(e.content_id) ?? 0) + 1);
    const expected = [...plays].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 5).map(([content_id, n]) => ({ content_id, plays: n }));
    expect(top.body.series[0].buckets[0]).toMatchObject({ source: 'batch', value: { items: expected } });
  });

  it('daily views (sessions, clicks-to-play, top paths, retention, binge, OBT) equal the published tables', async () => {
    const q = `granularity=day&from=${D}&to=${D + DAY}`;
    const [sessions] = (await published('daily_sessions')).filter((r) => r.device_type === 'ALL');
    const s = (await get(`/v1/metrics/daily_sessions?${q}`)).body.series[0].buckets[0];
    expect(s).toMatchObject({ source: 'batch', exact: true });
    expect(s.value.sessions).toBe(Number(sessions.sessions));
    expect(s.value.median_duration_ms).toBeCloseTo(Number(sessions.median_duration_ms), 6);
    expect(s.value.bounce_rate).toBeCloseTo(Number(sessions.bounce_rate), 9);

    const [ctp] = await published('clicks_to_play');
    const c = (await get(`/v1/metrics/clicks_to_play?${q}`)).body.series[0].buckets[0].value;
    expect(c.play_sessions).toBe(Number(ctp.play_sessions));
    expect(c.no_play_sessions).toBe(Number(ctp.no_play_sessions));
    expect(c.histogram.map((h: any) => h.sessions)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => Number(ctp[`clicks_${i}`])).concat(Number(ctp.clicks_10_plus)));

    const paths = await published('top_paths');
    const p = (await get(`/v1/metrics/top_paths?${q}`)).body.series[0].buckets[0].value.paths;
    expect(p).toEqual(paths.map((r) => ({ rank: Number(r.rank), path: r.path, sessions: Number(r.sessions) })));

    const cohorts = await published('retention_cohorts');
    const ret = (await get(`/v1/metrics/retention?${q}`)).body.series[0].buckets[0];
    expect(ret).toMatchObject({ source: 'batch', value: { as_of_day: dayOf(D), cohort_size: Number(cohorts[0].cohort_size) } });

    const binge = await published('binge_users');
    const bu = (await get(`/v1/metrics/binge_users?${q}`)).body.series[0].buckets[0];
    expect(bu).toMatchObject({ source: 'batch', value: { count: binge.length, users: binge.map((r) => r.user_id).sort() } });

    const obt = await published('daily_aggregates_with_dimensions');
    const total = obt.find((r) => r.device_type === 'ALL' && r.app_version === 'ALL' && r.country === 'ALL')!;
    const o = (await get(`/v1/metrics/obt?${q}`)).body.series[0].buckets[0].value;
    expect(o).toEqual({
      total_events: Number(total.total_events),
      total_installs: Number(total.total_installs),
      total_views: Number(total.total_views),
      total_plays: Number(total.total_plays),
      total_sessions: Number(total.total_sessions),
      unique_users: Number(total.unique_users),
    });
    expect(o.total_events).toBe(count((e) => e.ts >= D && e.ts < D + DAY));
    const byDevice = await get(`/v1/metrics/obt?${q}&group_by=device_type`);
    const deviceRows = obt.filter((r) => r.device_type !== 'ALL' && r.app_version === 'ALL' && r.country === 'ALL');
    expect(byDevice.body.series.map((x: any) => [x.key.device_type, x.buckets[0].value.unique_users]).sort()).toEqual(
      deviceRows.map((r) => [r.device_type, Number(r.unique_users)]).sort(),
    );
    // Days after the daily watermark have no speed equivalent: not covered.
    const after = (await get(`/v1/metrics/daily_sessions?granularity=day&from=${Y}&to=${Y + DAY}`)).body.series[0].buckets[0];
    expect(after).toMatchObject({ source: 'none', covered: false, value: null });
  });
});

describe('serving: the watermark moves, and an operator can pin it', () => {
  it('switches Y 00 from speed to batch with the same count after its hourly run publishes', async () => {
    const url = `/v1/metrics/events?granularity=hour&from=${Y}&to=${Y + H}`;
    const before = (await get(url)).body.series[0].buckets[0];
    expect(before).toMatchObject({ source: 'speed', exact: false });
    await publishHour(hourId(Y));
    // The Temporal workflow's notice; the serving layer's poll interval is 10 minutes here, so only the notice can explain the switch.
    await redis.publish(speedKeys(cfg).watermarkChannel(), JSON.stringify({ hourlyEnd: Y + H }));
    const after = await waitFor('Y 00 to switch to batch', async () => {
      const b = (await get(url)).body.series[0].buckets[0];
      return b.source === 'batch' ? b : undefined;
    });
    expect(after).toMatchObject({ source: 'batch', exact: true, covered: true, value: before.value });
    expect((await get('/v1/freshness')).body.watermark.hourly_end).toBe(Y + H);
  });

  it('pins the watermark with an admin key (W = min(pin, computed)) and clears it', async () => {
    const url = `/v1/metrics/events?granularity=hour&from=${Y}&to=${Y + 2 * H}`;
    const pin = (pinned_end: number | null, key = 'dev-admin-key') =>
      fetch(`${serving.url}/v1/admin/watermark`, { method: 'PUT', headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: JSON.stringify({ pinned_end }) });
    expect((await pin(Y, 'dev-read-key')).status).toBe(401);
    const res = await pin(Y);
    expect(res.status).toBe(200);
    expect((await res.json()).watermark).toMatchObject({ pinned_end: Y, hourly_end: Y });
    expect((await get(url)).body.series[0].buckets.map((b: any) => b.source)).toEqual(['speed', 'speed']);
    expect((await get(url)).body.boundary).toBe(Y);
    expect((await pin(null)).status).toBe(200);
    expect((await get(url)).body.series[0].buckets.map((b: any) => b.source)).toEqual(['batch', 'speed']);
  });
});

describe('serving: errors, auth, limits, operations', () => {
  it('answers 400 naming the parameter', async () => {
    const cases: Array<[string, string]> = [
      ['/v1/metrics/events?granularity=week', 'granularity'],
      ['/v1/metrics/events?from=yesterday', 'from'],
      [`/v1/metrics/events?from=${D}&to=${D - H}`, 'to'],
      [`/v1/metrics/events?granularity=second&from=0&to=${NOW}`, 'to'],
      ['/v1/metrics/events?group_by=planet', 'group_by'],
      ['/v1/metrics/events?event_type=teleport', 'event_type'],
      ['/v1/metrics/top_content?limit=0', 'limit'],
      ['/v1/metrics/obt?group_by=app_version', 'group_by'],
      ['/v1/metrics/active_users?granularity=second', 'granularity'],
      ['/v1/metrics/events?colour=red', 'colour'],
    ];
    for (const [url, parameter] of cases) {
      const r = await get(url);
      expect({ url, status: r.status, parameter: r.body.parameter }).toEqual({ url, status: 400, parameter });
      expect(r.body.message).toContain(parameter);
    }
  });

  it('answers 401 without a read key, 404 for an unknown metric', async () => {
    expect((await get('/v1/metrics/events', {})).status).toBe(401);
    expect((await get('/v1/metrics/events', { 'x-api-key': cfg.collector.apiKeys[0] })).status).toBe(401);
    const r = await get('/v1/metrics/revenue');
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ error: 'unknown_metric', metric: 'revenue' });
    expect(r.body.known).toContain('events');
  });

  it('answers 429 past the rate limit', async () => {
    const limited = await startServing({ ...cfg, serving: { ...cfg.serving, rateLimitPerMin: 3 } }, { port: 0, host: '127.0.0.1' });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await fetch(`${limited.url}/v1/freshness`, { headers: KEY })).status);
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
    } finally {
      await limited.stop();
    }
  });

  it('serves OpenAPI, Prometheus metrics, health, freshness and alerts', async () => {
    const api = (await get('/openapi.json', {})).body;
    expect(Object.keys(api.paths)).toEqual(expect.arrayContaining(['/v1/metrics/events', '/v1/metrics/obt', '/v1/admin/watermark', '/v1/alerts', '/v1/freshness']));
    expect(api.paths['/v1/metrics/events'].get.parameters.map((p: any) => p.name)).toEqual(expect.arrayContaining(['from', 'to', 'granularity', 'group_by']));
    const metrics = await (await fetch(`${serving.url}/metrics`)).text();
    expect(metrics).toMatch(/serving_http_request_duration_seconds_bucket\{.*route="\/v1\/metrics\/events"/);
    expect(metrics).toMatch(/serving_buckets_total\{metric="events",source="batch"\} \d+/);
    expect((await get('/health', {})).body).toMatchObject({ status: 'ok', redis: true, batch_views: true });
    const f = (await get('/v1/freshness')).body;
    expect(f.freshness.speed_lag_ms).toBeGreaterThanOrEqual(0);
    // W = Y 01:00 is 23–47 h old and the speed retention is 48 h: past 75 % of it (36 h) the batch-lag alert fires.
    const alerts = (await get('/v1/alerts')).body.alerts;
    const lagging = Date.now() - (Y + H) > 0.75 * cfg.speed.retentionMs;
    expect(alerts.some((a: any) => a.rule === 'batch_lag' && a.layer === 'serving')).toBe(lagging);
  });
});
