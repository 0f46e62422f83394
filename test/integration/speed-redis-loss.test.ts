/**
 * Redis goes back in time under a running speed layer: SIGKILLed and restarted
 * from an older AOF (what `appendfsync everysec` does to the last second, at a
 * larger scale). The steps applied since that AOF are gone from Redis while the
 * consumer is past them; the layer must notice (the script reports a gap), re-read
 * from Redis' offsets, and end with every count exact.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { readEventCounts, readOffsets } from '../../common/speed-keys';
import { RedisApplier } from '../../speed-layer/apply';
import { eventIdHash, foldEvents } from '../../speed-layer/fold';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { isolatedConfig } from '../support/isolated';
import { expectExact, ownRedis, type OwnRedis } from './speed-redis-loss-support';
import { highWatermarks, metricValue, produce, simulatedRecords, sum, toMessages, waitAllApplied } from './speed-support';

const MIN = 60_000;

describe('speed layer: Redis restarted from an older AOF while the layer runs', () => {
  let own: OwnRedis;
  let redis: Redis;
  let layer: SpeedLayer | undefined;

  beforeAll(async () => {
    own = await ownRedis();
    redis = redisClient(await isolatedConfig('speed-redis-old-aof', { REDIS_URL: own.url }));
  });
  afterAll(async () => {
    await layer?.stop();
    redis?.disconnect();
    await own?.close();
  });

  // Two ways to notice: the apply script's 'gap' on the next step of each partition (the reconnect check off),
  // and the check of Redis' offsets when it reconnects (which also covers partitions without new messages).
  it.each([
    ['by the apply script alone', false],
    ['by the check on reconnect', true],
  ])('notices the steps Redis lost (%s), re-reads them, and every count is exact', async (_, checkOnReconnect) => {
    const cfg = await isolatedConfig(`speed-redis-old-aof-${checkOnReconnect ? 'check' : 'script'}`, { REDIS_URL: own.url, SPEED_PORT: '0' });
    const now = Date.now();
    const records = simulatedRecords(cfg, { seed: 61, users: 300, windowMs: 60 * MIN, now, duplicateFraction: 0.08 });
    expect(records.length).toBeGreaterThan(2000);
    const third = Math.floor(records.length / 3);
    const phases = [records.slice(0, third), records.slice(third, 2 * third), records.slice(2 * third)];

    layer = await startSpeedLayer(cfg, { alerts: false, checkOnReconnect });
    await produce(cfg, toMessages(phases[0]));
    await waitAllApplied(redis, cfg);
    const old = await own.copyAof();
    const atCopy = await readOffsets(redis, cfg);

    await produce(cfg, toMessages(phases[1]));
    await waitAllApplied(redis, cfg);
    const beforeCrash = await readOffsets(redis, cfg);
    expect(sum(beforeCrash)).toBe(2 * third);

    // The crash, and a restart that only has the older AOF: Redis is back at phase 1's end.
    await own.kill();
    own.restoreAof(old);
    await own.start();
    expect(await readOffsets(redis, cfg)).toEqual(atCopy);

    await produce(cfg, toMessages(phases[2]));
    await waitAllApplied(redis, cfg, 90_000);
    expect(await readOffsets(redis, cfg)).toEqual(Object.fromEntries(Object.entries(await highWatermarks(cfg)).filter(([, h]) => h > 0).map(([p, h]) => [Number(p), h])));
    await expectExact(redis, cfg, records, now);
    // Each partition that lost steps was found behind once (by a step, or by the check on reconnect).
    const lost = Object.keys(beforeCrash).filter((p) => beforeCrash[Number(p)] > (atCopy[Number(p)] ?? 0)).length;
    expect(lost).toBeGreaterThan(0);
    expect(await metricValue(layer, 'speed_redis_gaps_total')).toBeGreaterThanOrEqual(lost);
    expect(await metricValue(layer, 'speed_redis_lost_messages_total')).toBe(0);
    await layer.stop();
    layer = undefined;
  });

  it('the apply script refuses, writing nothing, a step above its stored offset (gap) or on a partition without one (missing), unless told to accept it', async () => {
    const c = await isolatedConfig('speed-redis-script', { REDIS_URL: own.url });
    const applier = new RedisApplier(redis, c);
    const now = Date.now();
    const rec = (i: number): EventRecord => {
      const v = validateEvent({ event_id: `s-${i}`, event_type: 'click', user_id: `u-${i}`, timestamp: now - 5000 }, now);
      if (!v.ok) throw new Error(v.detail);
      return v.record;
    };
    const req = (partition: number, firstOffset: number, n: number, accept?: 'init' | number) => {
      const events = Array.from({ length: n }, (_, i) => rec(partition * 1000 + firstOffset + i));
      const fold = foldEvents(events.map((r) => ({ record: r, hash: eventIdHash(r.event_id) })), { now, secondRetentionMs: c.speed.secondRetentionMs, retentionMs: c.speed.retentionMs });
      return { topic: c.kafka.rawTopic, partition, firstOffset, nextOffset: firstOffset + n, accept, now, fold, binges: [], unparseable: 0, crossBatchDuplicates: 0, freshnessMs: 1 };
    };
    const total = async () => (await readEventCounts(redis, c, { granularity: 'minute', from: now - 5000, to: now - 4999 }, now))[0].value;

    // Offset 0 has nothing before it: a first step there sets the offset.
    expect(await applier.apply(req(0, 0, 10))).toEqual({ status: 'applied' });
    // Redis at 10, the consumer at 15: the 5 steps in between are not in Redis.
    expect(await applier.apply(req(0, 15, 5))).toEqual({ status: 'gap', stored: 10 });
    expect(await applier.apply(req(0, 15, 5, 9))).toEqual({ status: 'gap', stored: 10 });
    expect(await total()).toBe(10);
    expect(await applier.apply(req(0, 10, 10))).toEqual({ status: 'applied' });
    // Kafka no longer holds [20, 25): the consumer may accept exactly that stored offset.
    expect(await applier.apply(req(0, 25, 5, 20))).toEqual({ status: 'applied' });
    expect(await total()).toBe(25);
    // No offset for partition 1 and a step past its start: refused unless the consumer allows it.
    expect(await applier.apply(req(1, 40, 3))).toEqual({ status: 'missing' });
    expect(await total()).toBe(25);
    expect(await applier.apply(req(1, 40, 3, 'init'))).toEqual({ status: 'applied' });
    expect(await total()).toBe(28);
    expect(await readOffsets(redis, c)).toEqual({ 0: 30, 1: 43 });
  });
});
