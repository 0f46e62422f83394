/**
 * Failure paths of the speed layer on the real stack: Redis unreachable
 * mid-stream (through a proxy the test cuts; the shared Redis is untouched),
 * and the alert rules firing into Redis.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, redisClient } from '../../common/clients';
import { loadConfig, type Config } from '../../common/config';
import { readAlerts, readCountBreakdown, readOffsets, readStats } from '../../common/speed-keys';
import { AlertEvaluator } from '../../speed-layer/alerts';
import { speedMetrics } from '../../speed-layer/metrics';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { isolatedConfig } from '../support/isolated';
import { committedOffsets, cuttableProxy, expectedValues, metricValue, produce, simulatedRecords, sum, toMessages, waitAllApplied, waitFor } from './speed-support';

const MIN = 60_000;

describe('speed layer: Redis unreachable mid-stream', () => {
  let cfg: Config;
  let direct: Redis;
  let proxy: Awaited<ReturnType<typeof cuttableProxy>>;
  let layer: SpeedLayer | undefined;

  beforeAll(async () => {
    proxy = await cuttableProxy(loadConfig().stack.redisPort);
    cfg = await isolatedConfig('speed-redis-down', { SPEED_PORT: '0', REDIS_URL: `redis://127.0.0.1:${proxy.port}`, SPEED_MAX_RETRY_BACKOFF_MS: '500' });
    direct = redisClient(loadConfig({ ...process.env, REDIS_KEY_PREFIX: cfg.redis.keyPrefix }));
  });
  afterAll(async () => {
    await layer?.stop();
    direct?.disconnect();
    await proxy?.close();
  });

  it('does not advance or commit while Redis is down, retries without crashing, and ends exact', async () => {
    const now = Date.now();
    const all = simulatedRecords(cfg, { seed: 5, users: 100, windowMs: 30 * MIN, now });
    const [first, second] = [all.slice(0, 300), all.slice(300)];
    await produce(cfg, toMessages(first));
    layer = await startSpeedLayer(cfg, { alerts: false });
    await waitAllApplied(direct, cfg);
    const appliedBefore = await readOffsets(direct, cfg);
    const statsBefore = await readStats(direct, cfg);
    await waitFor('kafka commits to catch up', async () => (sum(await committedOffsets(cfg)) === 300 ? true : undefined));

    await proxy.cut();
    await produce(cfg, toMessages(second));
    await waitFor('retries of the redis step', async () => ((await metricValue(layer!, 'speed_apply_failures_total')) >= 2 ? true : undefined), 30_000);
    expect(await readOffsets(direct, cfg)).toEqual(appliedBefore);
    expect(await readStats(direct, cfg)).toEqual(statsBefore);
    expect(sum(await committedOffsets(cfg))).toBe(300);
    expect(layer.consumer.healthy).toBe(true);
    const health = await fetch(`http://127.0.0.1:${layer.port}/health`);
    expect(health.status).toBe(503);

    await proxy.restore();
    await waitAllApplied(direct, cfg, 60_000);
    const exp = expectedValues(cfg, all, now);
    expect((await readStats(direct, cfg)).events).toBe(exp.events);
    for (const [bucket, fields] of exp.counts.minute) {
      expect(await readCountBreakdown(direct, cfg, 'minute', bucket)).toEqual(fields);
    }
    await waitFor('kafka commits after recovery', async () => (sum(await committedOffsets(cfg)) === all.length ? true : undefined));
  });
});

describe('alerting on the real stack', () => {
  let cfg: Config;
  let redis: Redis;
  let layer: SpeedLayer | undefined;

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-alerts', { SPEED_PORT: '0', SPEED_ALERT_MAX_LAG: '10', SPEED_ALERT_MIN_EVENTS_PER_SEC: '1000000' });
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    await layer?.stop();
    redis?.disconnect();
  });

  it('fires lag, error-rate and throughput alerts into Redis, and resolves lag once the consumer caught up', async () => {
    const admin = kafkaClient(cfg).admin();
    await admin.connect();
    try {
      const evaluator = new AlertEvaluator(cfg, redis, admin, speedMetrics());
      const t0 = Date.now();
      await evaluator.tick(t0);
      expect(await readAlerts(redis, cfg)).toEqual([]);
      const now = Date.now();
      const recs = simulatedRecords(cfg, { seed: 3, users: 10, windowMs: 10 * MIN, now, duplicateFraction: 0 }).slice(0, 50);
      await produce(cfg, toMessages(recs));
      await produce(cfg, Array.from({ length: 10 }, (_, i) => ({ key: null, value: JSON.stringify({ reason: 'malformed_json', raw: `bad ${i}` }) })), cfg.kafka.dlqTopic);
      await evaluator.tick(t0 + 2000);
      const firing = Object.fromEntries((await readAlerts(redis, cfg)).map((a) => [a.rule, a]));
      expect(Object.keys(firing).sort()).toEqual(['consumer_lag', 'error_rate', 'throughput']);
      expect(firing.consumer_lag).toMatchObject({ value: 50, threshold: 10, since: t0 + 2000 });
      expect(firing.error_rate.value).toBeCloseTo(10 / 60);
      expect(firing.throughput.value).toBeCloseTo(25);

      // Nothing applied for 7 s while 50 messages wait: at least 7 s of latency.
      await evaluator.tick(t0 + 7000);
      const stuck = (await readAlerts(redis, cfg)).find((a) => a.rule === 'latency');
      expect(stuck).toMatchObject({ value: 7000, threshold: 5000, since: t0 + 7000 });

      layer = await startSpeedLayer(cfg, { alerts: false });
      await waitAllApplied(redis, cfg);
      await waitFor('kafka commits', async () => (sum(await committedOffsets(cfg)) === 50 ? true : undefined));
      await evaluator.tick(Date.now());
      const after = Object.fromEntries((await readAlerts(redis, cfg)).map((a) => [a.rule, a]));
      expect(after.consumer_lag).toBeUndefined();
      expect(after.error_rate.since).toBe(t0 + 2000); // still firing: same incident, same since
    } finally {
      await admin.disconnect();
    }
  });
});
