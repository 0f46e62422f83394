/**
 * Catch-up at any lag (issue 17): the topic is filled with ≥ 500,000 events
 * spread over more than 3 days of event time while no speed layer runs; a
 * real speed-layer process (`speed-layer/main.ts`) then drains it with default
 * fetch sizes and ends with every count exact, without exiting. A second
 * consumer group (its own key prefix) drains the same backlog through a
 * SIGKILL in the middle of the catch-up and a restart, and ends exact too.
 * (The lake writer behind the same backlog: speed-catchup-lake.test.ts.)
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import { loadConfig, type Config } from '../../common/config';
import { ALL, type EventRecord } from '../../common/contract';
import { readBinge, readOffsets, readStats, speedKeys } from '../../common/speed-keys';
import { isolatedConfig } from '../support/isolated';
import { catchupBacklog, CATCHUP_RETENTION_MS, DAY, exited, freePort, largestBucket, metricSum, produceFast, samplePeak, type Child } from './speed-catchup-support';
import { expectedValues, spawnSpeedLayer, sum, waitFor } from './speed-support';

async function startSpeed(cfg: Config): Promise<Child> {
  const port = await freePort();
  const proc = spawnSpeedLayer(cfg, { SPEED_PORT: String(port) });
  const child: Child = { proc, port, peakMiB: 0, exits: [] };
  proc.on('exit', (code, signal) => child.exits.push({ code, signal }));
  return child;
}

/** Wait until Redis' stored offsets reach `total`, failing at once if the process exits. */
async function drained(redis: Redis, cfg: Config, child: Child, total: number, timeoutMs: number, until = total): Promise<number> {
  return waitFor(
    `the speed layer to apply ${until} of ${total} messages`,
    async () => {
      samplePeak(child);
      if (child.exits.length > 0) throw new Error(`speed layer exited: ${JSON.stringify(child.exits)}`);
      const applied = sum(await readOffsets(redis, cfg));
      return applied >= until ? applied : undefined;
    },
    timeoutMs,
    200,
  );
}

/** Every count the speed layer keeps, against the exact values (stats, minute and second counts, playback, top content, binge, daily users). */
async function expectExact(redis: Redis, cfg: Config, records: EventRecord[], now: number): Promise<void> {
  const exp = expectedValues(cfg, records, now);
  const keys = speedKeys(cfg);
  const stats = await readStats(redis, cfg);
  expect({ events: stats.events, duplicates: stats.duplicates, late: stats.late_minute, unparseable: stats.unparseable }).toEqual({
    events: exp.events,
    duplicates: exp.duplicates,
    late: exp.late,
    unparseable: 0,
  });
  const numbers = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  for (const g of ['minute', 'second'] as const) {
    expect((await redis.keys(speedKeys(cfg).glob('cnt', g))).length).toBe(exp.counts[g].size);
    const buckets = [...exp.counts[g].keys()];
    // Concurrent reads: the test's client pipelines them.
    const got = await Promise.all(buckets.map((b) => redis.hgetall(keys.counts(g, b))));
    buckets.forEach((bucket, i) => expect({ bucket, fields: numbers(got[i]) }).toEqual({ bucket, fields: exp.counts[g].get(bucket) }));
  }
  const minutes = [...exp.playback.keys()];
  const pb = await Promise.all(minutes.map((b) => redis.hgetall(keys.playback(b))));
  minutes.forEach((bucket, i) => {
    const e = Object.fromEntries(Object.entries(exp.playback.get(bucket)!).filter(([, n]) => n > 0));
    expect({ bucket, pb: numbers(pb[i]) }).toEqual({ bucket, pb: e });
  });
  for (const [hour, plays] of exp.top) {
    const flat = await redis.zrangebyscore(keys.topContent(hour), '-inf', '+inf', 'WITHSCORES');
    const got: Record<string, number> = {};
    for (let i = 0; i < flat.length; i += 2) got[flat[i]] = Number(flat[i + 1]);
    expect({ hour, got }).toEqual({ hour, got: plays });
  }
  expect(exp.binge.size).toBeGreaterThanOrEqual(3);
  for (const [day, users] of exp.binge) expect(await readBinge(redis, cfg, day)).toMatchObject({ day, users: [...users].sort() });
  // Distinct users are HyperLogLog estimates: within 2 % per day.
  for (const [k, users] of exp.users.day) {
    if (!k.endsWith(`:${ALL}`)) continue;
    const est = await redis.pfcount(keys.hll('day', Number(k.slice(0, k.indexOf(':'))), ALL));
    expect(Math.abs(est - users.size)).toBeLessThanOrEqual(Math.max(2, 0.02 * users.size));
  }
}

describe("the speed layer's Redis client", () => {
  it('fails a command too large to spread on its own, without an uncaught exception (no auto-pipelining)', async () => {
    // The largest argument count a call can take here; the speed layer's plans once exceeded it.
    const f = (...a: unknown[]) => a.length;
    let [lo, hi] = [1000, 10_000_000];
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      try {
        f(...new Array<string>(mid).fill('x'));
        lo = mid;
      } catch {
        hi = mid - 1;
      }
    }
    const cfg = loadConfig({ ...process.env, REDIS_KEY_PREFIX: `t:speed-client-${process.pid}:` });
    const client = redisClient(cfg, { autoPipelining: false });
    try {
      const sha = (await client.script('LOAD', 'return #ARGV')) as string;
      // Spread once here, as the old apply step did: with auto-pipelining, ioredis spreads it again, fails, and its
      // pipeline then throws 'results[i] is not iterable' from a timer (vitest reports that as an unhandled error).
      const args = new Array<string>(Math.floor(lo * 0.7)).fill('x');
      const concurrent = client.get(`${cfg.redis.keyPrefix}absent`);
      expect(await client.evalsha(sha, 0, ...args)).toBe(args.length);
      expect(await concurrent).toBeNull();
      // The way apply.ts passes a plan: one array, any size.
      const huge = new Array<string>(lo * 2).fill('y');
      expect(await client.evalsha(sha, 0, huge)).toBe(huge.length);
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      client.disconnect();
    }
  });
});

describe('speed layer: restart behind a backlog of days', () => {
  let cfg: Config;
  let redis: Redis;
  let records: EventRecord[];
  let now: number;
  const children: Child[] = [];

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-catchup', { SPEED_RETENTION_MS: String(CATCHUP_RETENTION_MS) });
    redis = redisClient(cfg);
    now = Date.now();
    records = catchupBacklog(cfg, now);
    await produceFast(cfg, records);
  });

  afterAll(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    if (redis && cfg) {
      // Not dropIsolated: its one DEL of every key would spread ~100,000 names onto the call stack.
      const keys = await redis.keys(speedKeys(cfg).glob()); // the second group's prefix is under it
      for (let i = 0; i < keys.length; i += 1000) await redis.unlink(...keys.slice(i, i + 1000));
    }
    redis?.disconnect();
  });

  it('holds ≥ 500,000 events over more than 3 days of event time', () => {
    expect(records.length).toBeGreaterThanOrEqual(500_000);
    let [lo, hi] = [Infinity, -Infinity];
    for (const r of records) [lo, hi] = [Math.min(lo, r.ts), Math.max(hi, r.ts)];
    expect(hi - lo).toBeGreaterThan(3 * DAY);
  });

  it('drains the backlog in bounded steps, stays up, and every count is exact', async () => {
    const child = await startSpeed(cfg);
    children.push(child);
    const t0 = Date.now();
    await drained(redis, cfg, child, records.length, 150_000);
    const seconds = (Date.now() - t0) / 1000;
    expect(await fetch(`http://127.0.0.1:${child.port}/health`).then((r) => r.json())).toMatchObject({ status: 'ok' });
    const metrics = await fetch(`http://127.0.0.1:${child.port}/metrics`).then((r) => r.text());
    const max = (name: string) => largestBucket(metrics, name);
    process.stderr.write(
      `[speed-catchup] ${records.length} events drained in ${seconds.toFixed(1)} s (${Math.round(records.length / seconds)} ev/s), peak RSS ${Math.round(child.peakMiB)} MiB, ` +
        `largest step ≤ ${max('speed_step_args')} args / ${max('speed_step_keys')} keys / ${max('speed_step_bytes')} bytes, failed steps ${metricSum(metrics, 'speed_apply_failures_total')}\n`,
    );
    expect(metricSum(metrics, 'speed_apply_failures_total')).toBe(0);
    expect(max('speed_step_args')).toBeLessThanOrEqual(cfg.speed.stepMaxArgs);
    expect(child.exits).toEqual([]);
    await expectExact(redis, cfg, records, now);
    child.proc.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
  });

  it('a SIGKILL in the middle of the catch-up and a restart still end exact', async () => {
    // Same topic, another group and key prefix: a speed layer that never saw the backlog.
    const cfg2 = loadConfig({ ...process.env, TOPIC_RAW: cfg.kafka.rawTopic, TOPIC_DLQ: cfg.kafka.dlqTopic, SPEED_GROUP: `${cfg.kafka.speedGroup}-k`, REDIS_KEY_PREFIX: `${cfg.redis.keyPrefix}k:`, SPEED_RETENTION_MS: String(cfg.speed.retentionMs) });
    const first = await startSpeed(cfg2);
    children.push(first);
    const atKill = await drained(redis, cfg2, first, records.length, 120_000, Math.floor(records.length * 0.4));
    first.proc.kill('SIGKILL');
    expect(await exited(first)).toBe('SIGKILL');
    expect(atKill).toBeLessThan(records.length);

    const second = await startSpeed(cfg2);
    children.push(second);
    await drained(redis, cfg2, second, records.length, 150_000);
    expect(second.exits).toEqual([]);
    await expectExact(redis, cfg2, records, now);
    second.proc.kill('SIGTERM');
    expect(await exited(second)).toBe(0);
  });

});

