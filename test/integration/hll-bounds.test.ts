/**
 * The error bounds the API puts on HyperLogLog estimates are honest: the
 * stated 95 % interval (value ± error.ci95) holds the exact count in at least
 * 95 % of buckets. Small cardinalities go end to end (simulator → Kafka → the
 * real speed layer → Redis → the serving API, per minute and per hour, for all
 * users and per device, with users on several devices); large ones straight on
 * Redis' HLL with the same bound function, since a day of 10⁵-user buckets is
 * more than a test should push through the pipeline.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, bucketStart, type EventRecord } from '../../common/contract';
import { hllErrorBound } from '../../common/speed-keys';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { produce, simulatedRecords, toMessages, waitAllApplied } from './speed-support';

/** 2,000 users over 8 h: minute buckets of ~60 users, where one user off is already outside ±1.96 × 0.81 %. */
const WINDOW_H = 8;

interface Bucket {
  start: number;
  source: string;
  value: number | null;
  error?: { ci95: number; relative_std_error: number };
}

describe('HyperLogLog error bounds', () => {
  let cfg: Config;
  let redis: Redis;
  let speed: SpeedLayer;
  let serving: Serving;
  let records: EventRecord[];
  const now = Date.now();

  beforeAll(async () => {
    cfg = await isolatedConfig('hll', { SPEED_PORT: '0' });
    redis = redisClient(cfg);
    records = simulatedRecords(cfg, { seed: 31, users: 2000, windowMs: WINDOW_H * BUCKET_MS.hour, now });
    speed = await startSpeedLayer(cfg, { alerts: false });
    await produce(cfg, toMessages(records));
    await waitAllApplied(redis, cfg, 180_000);
    serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  }, 300_000);

  afterAll(async () => {
    await serving?.stop();
    await speed?.stop();
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  /** Exact distinct users per bucket (first event per event_id: duplicates change nothing here). */
  function exact(g: 'minute' | 'hour', device: string | null): Map<number, number> {
    const sets = new Map<number, Set<string>>();
    for (const r of records) {
      if (device !== null && r.device_type !== device) continue;
      const b = bucketStart(r.ts, g);
      let s = sets.get(b);
      if (!s) sets.set(b, (s = new Set()));
      s.add(r.user_id);
    }
    return new Map([...sets].map(([b, s]) => [b, s.size]));
  }

  it('covers ≥ 95 % of minute and hour buckets, overall and per device (users on several devices)', async () => {
    const devices = [...new Set(records.map((r) => r.device_type))];
    const multiDevice = new Map<string, Set<string>>();
    for (const r of records) (multiDevice.get(r.user_id) ?? multiDevice.set(r.user_id, new Set()).get(r.user_id)!).add(r.device_type);
    expect([...multiDevice.values()].filter((s) => s.size > 1).length).toBeGreaterThan(20);

    const report: string[] = [];
    let total = 0;
    let inside = 0;
    let textbook = 0;
    for (const g of ['minute', 'hour'] as const) {
      // Whole buckets inside the simulated window, all older than a minute (the speed layer has them all).
      const to = bucketStart(now, g) - (g === 'minute' ? BUCKET_MS.minute : 0);
      const from = bucketStart(now - WINDOW_H * BUCKET_MS.hour, g) + BUCKET_MS[g];
      for (const device of [null, ...devices]) {
        const want = exact(g, device);
        const qs = new URLSearchParams({ granularity: g, from: String(from), to: String(to), ...(device ? { device_type: device } : {}) });
        const res = await fetch(`${serving.url}/v1/metrics/active_users?${qs}`, { headers: { 'x-api-key': 'dev-read-key' } });
        expect(res.status).toBe(200);
        const body = (await res.json()) as { series: Array<{ buckets: Bucket[] }> };
        let n = 0;
        let ok = 0;
        for (const b of body.series[0].buckets) {
          expect(b.source).toBe('speed');
          const truth = want.get(b.start) ?? 0;
          if (truth === 0) continue;
          n++;
          if (Math.abs(b.value! - truth) <= b.error!.ci95) ok++;
          if (Math.abs(b.value! - truth) <= 1.96 * 0.0081 * b.value!) textbook++;
        }
        total += n;
        inside += ok;
        report.push(`${g} ${device ?? 'ALL'}: ${ok}/${n}`);
        // Every group with enough buckets to judge must be covered on its own, not only in the sum.
        if (n >= 100) expect({ group: `${g} ${device ?? 'ALL'}`, coverage: ok / n >= 0.95 }).toEqual({ group: `${g} ${device ?? 'ALL'}`, coverage: true });
      }
    }
    expect(total).toBeGreaterThan(3000);
    expect(inside / total, report.join('; ')).toBeGreaterThanOrEqual(0.95);
    process.stderr.write(`[hll] measured bound ${inside}/${total}, textbook ${textbook}/${total}; ${report.join('; ')}\n`);
  });

  it('covers ≥ 95 % of large cardinalities (1,000 … 200,000) on Redis itself', async () => {
    const key = `${cfg.redis.keyPrefix}hll-large`;
    const cases = 60;
    let ok = 0;
    const misses: string[] = [];
    for (let k = 0; k < cases; k++) {
      const n = Math.round(1000 * 200 ** (k / (cases - 1)));
      await redis.del(key);
      for (let i = 0; i < n; i += 5000) {
        const ids: string[] = [];
        for (let j = i; j < Math.min(n, i + 5000); j++) ids.push(`user_${k}_${j}`);
        await redis.pfadd(key, ...ids);
      }
      const est = await redis.pfcount(key);
      if (Math.abs(est - n) <= hllErrorBound(est).ci95) ok++;
      else misses.push(`${n}: ${est}`);
    }
    await redis.del(key);
    expect(ok / cases, `outside: ${misses.join(', ')}`).toBeGreaterThanOrEqual(0.95);
  }, 120_000);

  it('covers ≥ 95 % of small cardinalities (45 … 60 users), where the textbook interval does not', async () => {
    // Fixed ids, so the estimates (and this test) are the same on every run. 400 buckets of 45–60 users:
    // where one user off is already outside ±1.96 × 0.81 % (bench/hll-error.ts: 92 % coverage at 50).
    const key = `${cfg.redis.keyPrefix}hll-small`;
    let measured = 0;
    let textbook = 0;
    const cases = 400;
    for (let k = 0; k < cases; k++) {
      const n = 45 + (k % 16);
      await redis.del(key);
      await redis.pfadd(key, ...Array.from({ length: n }, (_, i) => `user_${7000 + k}_${i}`));
      const est = await redis.pfcount(key);
      if (Math.abs(est - n) <= hllErrorBound(est).ci95) measured++;
      if (Math.abs(est - n) <= 1.96 * 0.0081 * est) textbook++;
    }
    await redis.del(key);
    process.stderr.write(`[hll] small cardinalities: measured bound ${measured}/${cases}, textbook ${textbook}/${cases}\n`);
    expect(measured / cases).toBeGreaterThanOrEqual(0.95);
    // What the API stated before: it held in fewer than 95 % of these buckets.
    expect(textbook / cases).toBeLessThan(0.95);
  });

  it('states the measured bound, not the textbook one (bench/hll-error.ts: ±1.96 × 0.81 % held in 92 % of 50-user and 91 % of 100,000-user trials)', () => {
    // At 50 users one user off is 2 %, outside the textbook ±1.6 %.
    expect(1.96 * 0.0081 * 50).toBeLessThan(1);
    expect(hllErrorBound(50).ci95).toBe(2);
    expect(hllErrorBound(100_000).ci95).toBe(1900);
  });
});
