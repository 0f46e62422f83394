/**
 * Helpers of the speed-layer integration tests: a dataset from the simulator
 * turned into collector records, a producer, the exact expected values computed
 * from METRICS.md's definitions, and waits on what Redis/Kafka report.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { Redis } from 'ioredis';
import { kafkaClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { ALL, BINGE_WINDOW_MS, bucketStart, dayOf, validateEvent, type EventRecord } from '../../common/contract';
import { countField, LIVE_SESSIONS_WINDOW_MS, LIVE_USERS_WINDOW_MS, readOffsets } from '../../common/speed-keys';
import { simulate } from '../../ingestion/simulator/generate';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { spawnMain } from '../support/spawn-main';

export interface Message {
  key: string | null;
  value: string | null;
}

const MIN = 60_000;
const HOUR = 3_600_000;

/**
 * Collector records of a simulated window ending now (valid, late and
 * duplicate sends; invalid ones never reach events.raw). Events within 5
 * minutes of the per-second retention boundary are left out, so the expected
 * values do not depend on when exactly the consumer applies them.
 */
export function simulatedRecords(cfg: Config, opts: { seed: number; users: number; windowMs: number; duplicateFraction?: number; now?: number }): EventRecord[] {
  const now = opts.now ?? Date.now();
  const boundary = now - cfg.speed.secondRetentionMs;
  const out: EventRecord[] = [];
  for (const send of simulate({ seed: opts.seed, users: opts.users, startMs: now - opts.windowMs, endMs: now, duplicateFraction: opts.duplicateFraction ?? 0.05, lateFraction: 0.02 })) {
    if (send.kind === 'invalid') continue;
    const v = validateEvent(JSON.parse(send.line), now);
    if (!v.ok) throw new Error(`simulator sent an invalid ${send.kind} event: ${v.detail}`);
    if (Math.abs(v.record.ts - boundary) < 5 * MIN) continue;
    out.push(v.record);
  }
  return out;
}

export function toMessages(records: EventRecord[]): Message[] {
  return records.map((r) => ({ key: r.user_id, value: JSON.stringify(r) }));
}

export async function produce(cfg: Config, messages: Message[], topic = cfg.kafka.rawTopic): Promise<void> {
  const producer = kafkaClient(cfg, 'speed-test-producer').producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 1000) {
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 1000) });
    }
  } finally {
    await producer.disconnect();
  }
}

export async function highWatermarks(cfg: Config, topic = cfg.kafka.rawTopic): Promise<Record<number, number>> {
  const admin = kafkaClient(cfg, 'speed-test-admin').admin();
  await admin.connect();
  try {
    const rows = await admin.fetchTopicOffsets(topic);
    return Object.fromEntries(rows.map((r) => [r.partition, Number(r.high)]));
  } finally {
    await admin.disconnect();
  }
}

export async function committedOffsets(cfg: Config, groupId = cfg.kafka.speedGroup): Promise<Record<number, number>> {
  const admin = kafkaClient(cfg, 'speed-test-admin').admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId, topics: [cfg.kafka.rawTopic] });
    return Object.fromEntries(t.partitions.map((p) => [p.partition, Number(p.offset)]));
  } finally {
    await admin.disconnect();
  }
}

/** Sum of offsets; a partition without any (-1) adds nothing. */
export const sum = (o: Record<number, number>): number => Object.values(o).reduce((a, b) => a + Math.max(0, b), 0);

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Whether `offsets` are at `high` on every partition that has messages. */
const atEnd = (high: Record<number, number>, offsets: Record<number, number>): boolean => Object.entries(high).every(([p, h]) => h === 0 || offsets[Number(p)] === h);

/** Resolves when Redis' stored offsets reach the end of every partition. */
export async function waitAllApplied(redis: Redis, cfg: Config, timeoutMs = 60_000): Promise<void> {
  const high = await highWatermarks(cfg);
  await waitFor(
    `offsets in Redis to reach ${JSON.stringify(high)}`,
    async () => {
      const stored = await readOffsets(redis, cfg);
      return atEnd(high, stored) ? true : undefined;
    },
    timeoutMs,
  );
}

/**
 * A second consumer group re-reading the topic from the start: an in-process speed layer without
 * the seek to Redis' stored offsets, so every batch reaches the apply script, whose stored-offset
 * check must skip it. `during` runs once the group has committed the end of every partition; the
 * layer stops after it, whatever it throws.
 */
export async function withReplayGroup<T>(cfg: Config, during: (again: SpeedLayer) => Promise<T>): Promise<T> {
  const cfg2 = { ...cfg, kafka: { ...cfg.kafka, speedGroup: `${cfg.kafka.speedGroup}-again` } };
  const again = await startSpeedLayer(cfg2, { alerts: false, seekOnAssign: false });
  try {
    const high = await highWatermarks(cfg);
    await waitFor('the second group to commit the end of every partition', async () => (atEnd(high, await committedOffsets(cfg2)) ? true : undefined));
    return await during(again);
  } finally {
    await again.stop();
  }
}

/** The exact values of METRICS.md over the distinct events (first occurrence wins) inside the speed retention. */
export function expectedValues(cfg: Config, records: EventRecord[], now: number) {
  const seen = new Set<string>();
  const distinct: EventRecord[] = [];
  for (const r of records) {
    if (seen.has(r.event_id)) continue;
    seen.add(r.event_id);
    distinct.push(r);
  }
  const inRetention = distinct.filter((r) => bucketStart(r.ts, 'minute') + MIN + cfg.speed.retentionMs > now);
  const counts = { second: new Map<number, Record<string, number>>(), minute: new Map<number, Record<string, number>>() };
  const users = { minute: new Map<string, Set<string>>(), hour: new Map<string, Set<string>>(), day: new Map<string, Set<string>>() };
  const playback = new Map<number, Record<string, number>>();
  const top = new Map<number, Record<string, number>>();
  const completes = new Map<string, number[]>();
  const lastTsByUser = new Map<string, number>();
  const lastTsBySession = new Map<string, number>();
  for (const r of inRetention) {
    const add = (g: 'second' | 'minute') => {
      const b = bucketStart(r.ts, g);
      const m = counts[g].get(b) ?? {};
      counts[g].set(b, m);
      for (const t of [r.event_type, ALL]) for (const d of [r.device_type, ALL]) for (const c of [r.country, ALL]) {
        const f = countField(t, d, c);
        m[f] = (m[f] ?? 0) + 1;
      }
    };
    add('minute');
    if (bucketStart(r.ts, 'second') + 1000 + cfg.speed.secondRetentionMs > now) add('second');
    for (const g of ['minute', 'hour', 'day'] as const) {
      for (const d of [ALL, r.device_type]) {
        const k = `${bucketStart(r.ts, g)}:${d}`;
        const s = users[g].get(k) ?? new Set<string>();
        s.add(r.user_id);
        users[g].set(k, s);
      }
    }
    const pbField = { video_play: 'plays', video_pause: 'pauses', video_complete: 'completes', rebuffer: 'rebuffers' }[r.event_type as string];
    if (pbField) {
      const m = playback.get(bucketStart(r.ts, 'minute')) ?? { plays: 0, pauses: 0, completes: 0, rebuffers: 0 };
      m[pbField] += 1;
      playback.set(bucketStart(r.ts, 'minute'), m);
    }
    if (r.event_type === 'video_play' && r.content_id) {
      const m = top.get(bucketStart(r.ts, 'hour')) ?? {};
      m[r.content_id] = (m[r.content_id] ?? 0) + 1;
      top.set(bucketStart(r.ts, 'hour'), m);
    }
    if (r.event_type === 'video_complete') completes.set(r.user_id, [...(completes.get(r.user_id) ?? []), r.ts]);
    lastTsByUser.set(r.user_id, Math.max(lastTsByUser.get(r.user_id) ?? -Infinity, r.ts));
    if (r.session_id) lastTsBySession.set(r.session_id, Math.max(lastTsBySession.get(r.session_id) ?? -Infinity, r.ts));
  }
  // Binge by brute force over every triple (METRICS.md's definition, not the layer's shortcut).
  const binge = new Map<string, Set<string>>();
  for (const [user, ts] of completes) {
    ts.sort((a, b) => a - b);
    for (let k = 2; k < ts.length; k++) {
      for (let i = 0; i < k - 1; i++) {
        if (ts[k] - ts[i] <= BINGE_WINDOW_MS) {
          const s = binge.get(dayOf(ts[k])) ?? new Set<string>();
          s.add(user);
          binge.set(dayOf(ts[k]), s);
        }
      }
    }
  }
  const live = (at: number) => ({
    activeUsers5m: [...lastTsByUser.values()].filter((t) => t >= at - LIVE_USERS_WINDOW_MS).length,
    openSessions30m: [...lastTsBySession.values()].filter((t) => t >= at - LIVE_SESSIONS_WINDOW_MS).length,
  });
  return {
    distinct: distinct.length,
    duplicates: records.length - distinct.length,
    late: distinct.length - inRetention.length,
    events: inRetention.length,
    counts,
    users,
    playback,
    top,
    binge,
    live,
  };
}

/**
 * A TCP proxy in front of Redis that a test can cut (connections refused, open
 * ones reset) and restore: "Redis unreachable" without touching the shared Redis.
 */
export async function cuttableProxy(targetPort: number): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (port: number) => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const stop = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      if (server.listening) server.close(() => r());
      else r();
    });
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  return { port, cut: stop, restore: () => listen(port), close: stop };
}

export const HOUR_MS = HOUR;

/** Sum of a Prometheus metric's samples whose labels match. */
export async function metricValue(layer: SpeedLayer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await layer.metrics.registry.getSingleMetric(name)!.get();
  return m.values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((s, v) => s + v.value, 0);
}

/**
 * The speed layer as a process of its own on the test's isolated topic, group and key prefix:
 * `node --import tsx` rather than the tsx CLI, so a SIGKILL hits the consumer itself; a killed
 * member leaves the group after 6 s. `env` adds or overrides settings.
 */
export function spawnSpeedLayer(cfg: Config, env: Record<string, string> = {}): ChildProcess {
  return spawnMain('speed child', 'speed-layer/main.ts', ['--no-alerts'], {
    TOPIC_RAW: cfg.kafka.rawTopic,
    TOPIC_DLQ: cfg.kafka.dlqTopic,
    SPEED_GROUP: cfg.kafka.speedGroup,
    REDIS_KEY_PREFIX: cfg.redis.keyPrefix,
    SPEED_RETENTION_MS: String(cfg.speed.retentionMs),
    SPEED_PORT: '0',
    SPEED_SESSION_TIMEOUT_MS: '6000',
    ...env,
  });
}
