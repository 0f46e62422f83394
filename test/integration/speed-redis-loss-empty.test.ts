/**
 * Redis loses everything (restarted with no AOF: a new disk, an empty or very
 * old AOF) while the Kafka group has committed offsets. Falling back to Kafka's
 * committed offsets would silently drop everything before them; the speed layer
 * must rebuild each such partition from the earliest offset Kafka holds, with the
 * redis_data_lost alert firing until it is back, and end exact. Both while the
 * layer runs, and for a layer started after the loss.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { readAlerts, readOffsets, speedKeys } from '../../common/speed-keys';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { isolatedConfig } from '../support/isolated';
import { expectExact, ownRedis, type OwnRedis } from './speed-redis-loss-support';
import { committedOffsets, metricValue, produce, simulatedRecords, sum, toMessages, waitAllApplied } from './speed-support';

const MIN = 60_000;

/** Polls the firing alerts until stopped; resolves with whether redis_data_lost was ever seen. */
function watchAlert(redis: Redis, cfg: Config): { stop(): Promise<boolean> } {
  let seen = false;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        if ((await readAlerts(redis, cfg)).some((a) => a.rule === 'redis_data_lost')) seen = true;
      } catch {
        // Redis restarting.
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

describe('speed layer: Redis restarted empty', () => {
  let own: OwnRedis;
  let redis: Redis;
  const layers: SpeedLayer[] = [];

  beforeAll(async () => {
    own = await ownRedis();
    redis = redisClient(await isolatedConfig('speed-redis-empty', { REDIS_URL: own.url }));
  });
  afterAll(async () => {
    for (const l of layers) await l.stop().catch(() => undefined);
    redis?.disconnect();
    await own?.close();
  });

  async function dataset(label: string, seed: number) {
    const cfg = await isolatedConfig(label, { REDIS_URL: own.url, SPEED_PORT: '0' });
    const now = Date.now();
    const records = simulatedRecords(cfg, { seed, users: 300, windowMs: 60 * MIN, now, duplicateFraction: 0.08 });
    expect(records.length).toBeGreaterThan(2000);
    const third = Math.floor(records.length / 3);
    return { cfg, now, records, phases: [records.slice(0, third), records.slice(third, 2 * third), records.slice(2 * third)] };
  }
  async function restartEmpty(): Promise<void> {
    await own.kill();
    own.restoreAof(null);
    await own.start();
  }

  it('under a running layer: rebuilds every partition from Kafka with the alert firing meanwhile, and ends exact', async () => {
    const { cfg, now, records, phases } = await dataset('speed-redis-empty-live', 67);
    const layer = await startSpeedLayer(cfg, { alerts: false });
    layers.push(layer);
    await produce(cfg, toMessages(phases[0]));
    await produce(cfg, toMessages(phases[1]));
    await waitAllApplied(redis, cfg);
    const lost = Object.keys(await readOffsets(redis, cfg)).length;
    expect(lost).toBeGreaterThan(0);

    const watch = watchAlert(redis, cfg);
    await restartEmpty();
    await produce(cfg, toMessages(phases[2]));
    await waitAllApplied(redis, cfg, 90_000);
    await expectExact(redis, cfg, records, now);
    expect(await metricValue(layer, 'speed_redis_rebuilds_total')).toBeGreaterThanOrEqual(lost);
    expect(await watch.stop()).toBe(true);
    expect((await readAlerts(redis, cfg)).map((a) => a.rule)).not.toContain('redis_data_lost');
    expect(await redis.hlen(speedKeys(cfg).rebuild(cfg.kafka.rawTopic))).toBe(0);
    await layer.stop();
    layers.pop();
  });

  it('for a layer started after the loss (the group has commits, Redis nothing): rebuilds instead of resuming at the commits, and ends exact', async () => {
    const { cfg, now, records, phases } = await dataset('speed-redis-empty-restart', 71);
    const first = await startSpeedLayer(cfg, { alerts: false });
    layers.push(first);
    await produce(cfg, toMessages(phases[0]));
    await waitAllApplied(redis, cfg);
    const lost = Object.keys(await readOffsets(redis, cfg)).length;
    await first.stop();
    layers.pop();
    await produce(cfg, toMessages(phases[1]));

    await restartEmpty();
    expect(sum(await committedOffsets(cfg))).toBe(phases[0].length);
    const watch = watchAlert(redis, cfg);
    const second = await startSpeedLayer(cfg, { alerts: false });
    layers.push(second);
    await produce(cfg, toMessages(phases[2]));
    await waitAllApplied(redis, cfg, 90_000);
    await expectExact(redis, cfg, records, now);
    expect(await metricValue(second, 'speed_redis_rebuilds_total')).toBeGreaterThanOrEqual(lost);
    expect(await watch.stop()).toBe(true);
    expect((await readAlerts(redis, cfg)).map((a) => a.rule)).not.toContain('redis_data_lost');
  });
});
