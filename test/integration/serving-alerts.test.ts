/**
 * The serving layer's batch-lag alert keeps firing for an hour the batch never
 * published, also after the speed layer dropped that hour (it is then answered
 * `none`): the alert watches from the lateness horizon, not from the speed
 * retention. The store is a stand-in (only what the alert reads); Redis and Kafka
 * are the real ones.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, bucketStart } from '../../common/contract';
import type { BatchStore } from '../../serving-layer/batch-store';
import { buildServer } from '../../serving-layer/server';
import { dropIsolated, isolatedConfig } from '../support/isolated';

const H = BUCKET_MS.hour;

describe('batch_lag alert', () => {
  let cfg: Config;
  let redis: Redis;
  beforeAll(async () => {
    cfg = await isolatedConfig('serving-alerts');
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  /** Every hour from 6 days ago to the last hour is published and exact, except `gap`. */
  function storeWithGap(now: number, gap: number): BatchStore {
    const start = bucketStart(now, 'hour') - 6 * 24 * H;
    const end = bucketStart(now, 'hour');
    const kind = { start, end, periodMs: H, stateOf: (t: number) => (t === gap ? 'missing' : 'exact') };
    const view = { hourly: kind, daily: { start: null, end: null }, pinnedEnd: null };
    return {
      version: 1,
      lastError: null,
      syncedAt: now,
      lakeWatermark: null,
      watermark: () => view,
      firstNotExact: (_kind: string, from: number) => {
        const first = Math.max(bucketStart(from, 'hour'), start);
        return gap >= first && gap < end ? gap : null;
      },
    } as unknown as BatchStore;
  }

  it('fires for an unpublished hour older than the speed retention (answered none), naming the hour', async () => {
    const now = Date.now();
    const gap = bucketStart(now, 'hour') - 60 * H; // older than the 48 h speed retention, inside the 7-day horizon
    const app = await buildServer(cfg, { redis, store: storeWithGap(now, gap), now: () => now });
    try {
      const res = await app.inject({ url: '/v1/alerts', headers: { 'x-api-key': 'dev-read-key' } });
      expect(res.statusCode).toBe(200);
      const lag = (res.json() as { alerts: Array<{ rule: string; message: string; value: number }> }).alerts.filter((a) => a.rule === 'batch_lag');
      expect(lag).toHaveLength(1);
      expect(lag[0].message).toContain(new Date(gap).toISOString().slice(0, 13));
      expect(lag[0].value).toBe(now - gap);
    } finally {
      await app.close();
    }
  });

  it('stays quiet when every hour is exact and W is recent', async () => {
    const now = Date.now();
    const app = await buildServer(cfg, { redis, store: storeWithGap(now, -1), now: () => now });
    try {
      const res = await app.inject({ url: '/v1/alerts', headers: { 'x-api-key': 'dev-read-key' } });
      expect((res.json() as { alerts: Array<{ rule: string }> }).alerts.filter((a) => a.rule === 'batch_lag')).toEqual([]);
    } finally {
      await app.close();
    }
  });
});
