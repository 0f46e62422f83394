/**
 * A Redis step that keeps failing for the same batch (Redis up, the step itself
 * rejected): the speed layer retries it with backoff and counts the failures,
 * stays in its consumer group, and /health turns degraded with the reason. Once
 * the cause is gone the batch applies and the counts are exact.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { readStats, speedKeys } from '../../common/speed-keys';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { isolatedConfig } from '../support/isolated';
import { expectedValues, metricValue, produce, simulatedRecords, toMessages, waitAllApplied, waitFor } from './speed-support';

const MIN = 60_000;

describe('speed layer: the same step failing again and again', () => {
  let cfg: Config;
  let redis: Redis;
  let layer: SpeedLayer | undefined;

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-health', { SPEED_PORT: '0', SPEED_MAX_RETRY_BACKOFF_MS: '300' });
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    await layer?.stop();
    const keys = await redis?.keys(speedKeys(cfg).glob());
    if (keys?.length) await redis.unlink(...keys);
    redis?.disconnect();
  });

  it('retries with backoff, stays in the group, reports degraded with the reason, and recovers exact', async () => {
    const now = Date.now();
    const records = simulatedRecords(cfg, { seed: 9, users: 50, windowMs: 20 * MIN, now });
    // An offsets key of the wrong type: every step fails at its first command, the offset guard's HGET
    // (WRONGTYPE), before writing anything, with Redis itself fine. (A script error after some writes would
    // leave them in place: Redis does not roll a script back.)
    await redis.set(speedKeys(cfg).offsets(cfg.kafka.rawTopic), 'not a hash');
    await produce(cfg, toMessages(records));
    layer = await startSpeedLayer(cfg, { alerts: false });
    const url = `http://127.0.0.1:${layer.port}/health`;

    const health = await waitFor(
      '/health to turn degraded',
      async () => {
        const res = await fetch(url);
        return res.status === 503 ? ((await res.json()) as { status: string; reason: string; redis: boolean; failing: Array<{ partition: number; offset: number; failures: number; error: string }> }) : undefined;
      },
      30_000,
      200,
    );
    expect(health.status).toBe('degraded');
    expect(health.redis).toBe(true);
    expect(health.reason).toMatch(/^redis step failing repeatedly: partition \d+ at offset \d+, \d+ failures in a row since .*WRONGTYPE/);
    expect(health.failing.length).toBeGreaterThan(0);
    expect(health.failing.every((f) => f.failures >= cfg.speed.degradedAfterFailures && /WRONGTYPE/.test(f.error))).toBe(true);
    // Nothing applied, every failure counted, the member still in its group.
    expect(await redis.exists(speedKeys(cfg).stats())).toBe(0);
    expect(await metricValue(layer, 'speed_apply_failures_total')).toBeGreaterThanOrEqual(cfg.speed.degradedAfterFailures);
    const admin = kafkaClient(cfg, 'speed-health-test').admin();
    await admin.connect();
    try {
      const { groups } = await admin.describeGroups([cfg.kafka.speedGroup]);
      expect(groups[0].state).toBe('Stable');
      expect(groups[0].members).toHaveLength(1);
    } finally {
      await admin.disconnect();
    }
    expect(layer.consumer.healthy).toBe(true);

    // The cause goes away: the same batches apply, health is ok again, the counts are exact.
    await redis.del(speedKeys(cfg).offsets(cfg.kafka.rawTopic));
    await waitAllApplied(redis, cfg, 30_000);
    await waitFor('/health ok', async () => ((await fetch(url)).status === 200 ? true : undefined), 10_000, 200);
    expect(await fetch(url).then((r) => r.json())).toEqual({ status: 'ok', redis: true, consumer: true });
    const exp = expectedValues(cfg, records, now);
    const stats = await readStats(redis, cfg);
    expect({ events: stats.events, duplicates: stats.duplicates }).toEqual({ events: exp.events, duplicates: exp.duplicates });
  });
});
