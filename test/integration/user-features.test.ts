/**
 * GET /v1/users/{user_id}/features on the real stack: a hand-built sequence for a few users goes through
 * the real collector (HTTP → Kafka) and a speed layer in its own process, and every feature the API answers
 * equals the value computed here from the sent events by METRICS.md's definitions ("User features").
 * A second consumer group re-reading the topic from the start (every batch replayed) changes nothing.
 */
import type { ChildProcess } from 'node:child_process';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, dayOf } from '../../common/contract';
import { speedKeys } from '../../common/speed-keys';
import { startCollector, type RunningCollector } from '../../ingestion/collector/service';
import { BatchStore } from '../../serving-layer/batch-store';
import { buildServer } from '../../serving-layer/server';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { highWatermarks, metricValue, spawnSpeedLayer, waitAllApplied, waitFor, withReplayGroup } from './speed-support';

const MIN = 60_000;
const HOUR = 3_600_000;
const INGEST = 'uf-ingest';
const READ = { 'x-api-key': 'dev-read-key' };

interface Sent {
  event_id: string;
  event_type: string;
  user_id: string;
  timestamp: number;
  content_id?: string;
  device_type?: string;
}

/** The features of one user by METRICS.md, over the distinct sent events, at `asOf` (no batch days published here). */
function expectedFeatures(all: Sent[], userId: string, asOf: number) {
  const seen = new Set<string>();
  const events = all
    .filter((e) => e.user_id === userId && !seen.has(e.event_id) && seen.add(e.event_id))
    .sort((a, b) => a.timestamp - b.timestamp || (a.event_id < b.event_id ? -1 : 1));
  const minute = Math.floor(asOf / MIN) * MIN;
  const hour = Math.floor(asOf / HOUR) * HOUR;
  const windows = { '5m': minute - 4 * MIN, '1h': minute - 59 * MIN, '24h': hour - 23 * HOUR };
  const count = (from: number, pred: (e: Sent) => boolean) => events.filter((e) => e.timestamp >= from && pred(e)).length;
  const per = (pred: (e: Sent) => boolean) => ({ '5m': count(windows['5m'], pred), '1h': count(windows['1h'], pred), '24h': count(windows['24h'], pred) });
  // Watch time: each play/resume to the next pause, stop, complete, play or resume, capped at 4 h, counted where it ends.
  let open: number | null = null;
  let watch = 0;
  for (const e of events) {
    const opens = e.event_type === 'video_play' || e.event_type === 'video_resume';
    if (!opens && !['video_pause', 'video_stop', 'video_complete'].includes(e.event_type)) continue;
    if (open !== null && e.timestamp >= windows['24h']) watch += Math.min(e.timestamp - open, 4 * HOUR);
    open = opens ? e.timestamp : null;
  }
  // Sessions: a new one at a gap over 30 minutes and at midnight; the latest is current while it is still open.
  let session: { start: number; last: number; events: number; device: string } | null = null;
  for (const e of events) {
    if (session && e.timestamp - session.last <= 30 * MIN && dayOf(e.timestamp) === dayOf(session.last)) {
      session.last = e.timestamp;
      session.events += 1;
    } else {
      session = { start: e.timestamp, last: e.timestamp, events: 1, device: e.device_type ?? 'unknown' };
    }
  }
  const current = session && asOf - session.last <= 30 * MIN && dayOf(session.last) === dayOf(asOf) ? session : null;
  const withContent = events.filter((e) => e.content_id !== undefined);
  const last = withContent[withContent.length - 1];
  const completes = events.filter((e) => e.event_type === 'video_complete').map((e) => e.timestamp);
  const bingeToday = completes.some((t, i) => i >= 2 && t - completes[i - 2] <= 4 * HOUR && dayOf(t) === dayOf(asOf));
  const fromDay = dayOf(asOf - 27 * BUCKET_MS.day);
  const days = new Set(events.map((e) => dayOf(e.timestamp)).filter((d) => d >= fromDay));
  return {
    user_id: userId,
    as_of: asOf,
    sources: { speed: true, batch: false },
    windows,
    events: per(() => true),
    plays: per((e) => e.event_type === 'video_play'),
    watch_time_ms_24h: watch,
    playing_since: open,
    current_session: current && { start: current.start, last_event: current.last, events: current.events, duration_ms: current.last - current.start, device_type: current.device },
    last_content: last ? { content_id: last.content_id, ts: last.timestamp } : null,
    binge: { binging_today: bingeToday, completes_4h: completes.filter((t) => t >= asOf - 4 * HOUR).length },
    days_active_28d: { value: days.size, from_day: fromDay, batch_days: 0, speed_days: days.size, batch_until: null },
    first_seen: { ts: events[0].timestamp, day: dayOf(events[0].timestamp), source: 'speed' },
  };
}

describe('user features: collector → speed layer → GET /v1/users/{user_id}/features', () => {
  let cfg: Config;
  let redis: Redis;
  let collector: RunningCollector;
  let speed: ChildProcess;
  let serving: Serving;
  const now = Date.now();
  const at = (msAgo: number) => now - msAgo;
  const sent: Sent[] = [];
  const users = ['uf-viewer', 'uf-binger', 'uf.odd+id@x=y:1'];

  const ev = (user: string, type: string, msAgo: number, extra: Partial<Sent> = {}): Sent => {
    const e = { event_id: `uf-${sent.length}`, event_type: type, user_id: user, timestamp: at(msAgo), ...extra };
    sent.push(e);
    return e;
  };
  const wire = (e: Sent) => ({
    event_id: e.event_id,
    event_type: e.event_type,
    user_id: e.user_id,
    timestamp: e.timestamp,
    properties: { ...(e.content_id ? { content_id: e.content_id } : {}), ...(e.device_type ? { device_type: e.device_type } : {}) },
  });
  async function post(events: Sent[]): Promise<void> {
    const res = await fetch(`${collector.address}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': INGEST }, body: JSON.stringify(events.map(wire)) });
    expect(res.status, await res.clone().text()).toBeLessThan(300);
  }
  const get = (p: string, headers: Record<string, string> = READ) => fetch(`${serving.url}${p}`, { headers });
  const features = async (user: string) => {
    const res = await get(`/v1/users/${encodeURIComponent(user)}/features`);
    expect(res.status).toBe(200);
    return (await res.json()) as { as_of: number };
  };

  beforeAll(async () => {
    cfg = await isolatedConfig('user-features', { COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0', COLLECTOR_API_KEYS: INGEST });
    redis = redisClient(cfg);
    collector = await startCollector(cfg);
    collector.address = collector.address.replace('[::1]', '127.0.0.1');
    speed = spawnSpeedLayer(cfg);
    serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });

    // A viewer: yesterday's visit (outside 24 h, inside 28 days), a session 2 h ago, and one going on now.
    ev('uf-viewer', 'page_view', 26 * HOUR, { device_type: 'web' });
    ev('uf-viewer', 'page_view', 2 * HOUR, { device_type: 'mobile' });
    ev('uf-viewer', 'video_play', 2 * HOUR - 2 * MIN, { device_type: 'mobile', content_id: 'c-old' });
    ev('uf-viewer', 'video_stop', 2 * HOUR - 32 * MIN, { device_type: 'mobile', content_id: 'c-old' });
    ev('uf-viewer', 'page_view', 50 * MIN, { device_type: 'smart_tv' });
    ev('uf-viewer', 'video_play', 48 * MIN, { device_type: 'smart_tv', content_id: 'c-1' });
    ev('uf-viewer', 'video_pause', 38 * MIN, { device_type: 'smart_tv', content_id: 'c-1' });
    ev('uf-viewer', 'search', 20 * MIN, { device_type: 'smart_tv' });
    // A binger: three completes within 4 h (today's, unless now is just past midnight: computed either way).
    for (const [i, ago] of [80, 50, 20].entries()) {
      ev('uf-binger', 'video_play', ago * MIN + 25 * MIN, { device_type: 'tablet', content_id: `ep-${i}` });
      ev('uf-binger', 'video_complete', ago * MIN, { device_type: 'tablet', content_id: `ep-${i}` });
    }
    ev('uf.odd+id@x=y:1', 'app_install', 3 * HOUR);
    await post(sent.slice());
    // A second request later: the open play, a resend of an event (a duplicate) and events in the last minutes.
    const resend = sent[5];
    const more = [
      ev('uf-viewer', 'video_resume', 3 * MIN, { device_type: 'smart_tv', content_id: 'c-1' }),
      ev('uf-viewer', 'click', 2 * MIN, { device_type: 'smart_tv' }),
      ev('uf-viewer', 'video_play', 1 * MIN, { device_type: 'smart_tv', content_id: 'c-2' }),
      ev('uf-binger', 'page_view', 4 * MIN, { device_type: 'tablet' }),
      ev('uf.odd+id@x=y:1', 'page_view', 30 * 1000),
    ];
    await post([...more, resend]);
    await waitFor('the collector to produce every event', async () => (Object.values(await highWatermarks(cfg)).reduce((a, b) => a + b, 0) >= sent.length + 1 ? true : undefined));
    await waitAllApplied(redis, cfg);
  }, 120_000);

  afterAll(async () => {
    speed?.kill('SIGKILL');
    await serving?.stop();
    await collector?.stop();
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  it('answers every feature of each user as computed from the sent events', async () => {
    for (const u of users) {
      const got = await features(u);
      expect(got).toEqual(expectedFeatures(sent, u, got.as_of));
    }
    const viewer = (await features('uf-viewer')) as unknown as ReturnType<typeof expectedFeatures>;
    // The sequence exercises what it should: a closed interval, an open play, a current session on the TV.
    expect(viewer.watch_time_ms_24h).toBeGreaterThan(0);
    expect(viewer.playing_since).toBe(at(1 * MIN));
    expect(viewer.current_session?.device_type).toBe('smart_tv');
    expect(viewer.days_active_28d.value).toBeGreaterThanOrEqual(2);
  });

  it('keeps the user id out of the key unescaped, and answers 404 / 400 / 401 as documented', async () => {
    expect(await redis.exists(speedKeys(cfg).userFeatures('uf.odd+id@x=y:1'))).toBe(1);
    expect(speedKeys(cfg).userFeatures('a{b}*')).toMatch(/\{usr\}:[A-Za-z0-9_-]+$/);
    // The remembered completes too (issue 14): no key of the prefix spells a user id.
    expect(await redis.zcard(speedKeys(cfg).bingeCompletes('uf-binger'))).toBeGreaterThan(0);
    expect(speedKeys(cfg).bingeCompletes('a{b}*')).toMatch(/\{binge\}:completes:[A-Za-z0-9_-]+$/);
    expect((await redis.keys(speedKeys(cfg).glob())).filter((k) => users.some((u) => k.includes(u)))).toEqual([]);
    const unknown = await get('/v1/users/nobody-here/features');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: 'unknown_user' });
    // The contract's longest user_id is looked up (fastify's default bound of a path parameter is 100).
    expect(await (await get(`/v1/users/${'x'.repeat(128)}/features`)).json()).toMatchObject({ error: 'unknown_user' });
    for (const bad of ['a%20b', 'x'.repeat(129), '%7Bx%7D', 'a%2A']) {
      const res = await get(`/v1/users/${bad}/features`);
      expect({ bad, status: res.status }).toEqual({ bad, status: 400 });
    }
    expect((await get('/v1/users/uf-viewer/features', {})).status).toBe(401);
  });

  it('answers 503 with Retry-After while Redis is unreachable', async () => {
    const store = await BatchStore.open(cfg, s3Client(cfg), pino({ level: 'silent' }));
    // Nothing listens on port 1.
    const dead = redisClient({ ...cfg, redis: { ...cfg.redis, url: 'redis://127.0.0.1:1' } });
    dead.on('error', () => {});
    const app = await buildServer(cfg, { redis: dead, store, log: pino({ level: 'silent' }) });
    try {
      const res = await app.inject({ url: '/v1/users/uf-viewer/features', headers: READ });
      expect(res.statusCode).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.json()).toMatchObject({ error: 'unavailable' });
    } finally {
      await app.close();
      await store.close();
      dead.disconnect();
    }
  });

  it('a consumer group re-reading the topic from the start (every batch replayed) changes nothing', async () => {
    const state = async () => Promise.all(users.map((u) => redis.hgetall(speedKeys(cfg).userFeatures(u))));
    const before = await state();
    await withReplayGroup(cfg, async (again) => {
      expect(await metricValue(again, 'speed_batches_total', { result: 'skipped' })).toBeGreaterThan(0);
      expect(await metricValue(again, 'speed_batches_total', { result: 'applied' })).toBe(0);
    });
    expect(await state()).toEqual(before);
    for (const u of users) {
      const got = await features(u);
      expect(got).toEqual(expectedFeatures(sent, u, got.as_of));
    }
  }, 120_000);
});
