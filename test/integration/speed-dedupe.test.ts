/**
 * The speed layer de-duplicates by event_id whatever the event's timestamp: an
 * SDK that restamps an event when it retries sends the same id with another
 * time, and that copy must not count again (issue 11, point 3, speed side).
 * The dedupe sets are keyed by arrival time; a copy arriving within the dedupe
 * window of the first meets it, in another batch and another event-time hour.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { ALL, bucketStart, validateEvent, type EventRecord } from '../../common/contract';
import { countField, speedKeys } from '../../common/speed-keys';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { metricValue, produce, toMessages, waitAllApplied } from './speed-support';

describe('speed layer: dedupe by event_id across timestamps', () => {
  let cfg: Config;
  let redis: Redis;
  let speed: SpeedLayer;
  const now = Date.now();
  const first = bucketStart(now, 'hour') - 2 * 3_600_000 + 10 * 60_000; // two hours back
  const restamped = first + 65 * 60_000; // the retry's clock: another minute, another hour

  const record = (id: string, ts: number, receivedAt: number): EventRecord => {
    const v = validateEvent({ event_id: id, event_type: 'click', user_id: 'u-dedupe', timestamp: ts }, now);
    if (!v.ok) throw new Error(v.detail);
    return { ...v.record, received_at: receivedAt };
  };

  async function minuteCount(ts: number): Promise<number> {
    const v = await redis.hget(speedKeys(cfg).counts('minute', bucketStart(ts, 'minute')), countField(ALL, ALL, ALL));
    return Number(v ?? 0);
  }

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-dedupe', { SPEED_PORT: '0' });
    redis = redisClient(cfg);
    speed = await startSpeedLayer(cfg, { alerts: false });
  });
  afterAll(async () => {
    await speed?.stop();
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  it('counts a re-sent id once, in the minute of the copy applied first, in a later batch and another hour', async () => {
    await produce(cfg, toMessages([record('dup-1', first, now - 30_000), record('solo-1', first, now - 30_000)]));
    await waitAllApplied(redis, cfg, 60_000);
    expect(await minuteCount(first)).toBe(2);

    // The retry, 20 s later by the collector's clock, with a timestamp 65 minutes later.
    await produce(cfg, toMessages([record('dup-1', restamped, now - 10_000), record('solo-2', restamped, now - 10_000)]));
    await waitAllApplied(redis, cfg, 60_000);
    expect(await minuteCount(first)).toBe(2);
    expect(await minuteCount(restamped)).toBe(1); // solo-2 only
    const stats = await redis.hget(speedKeys(cfg).stats(), 'duplicates');
    expect(Number(stats)).toBe(1);
  });
});

describe('speed layer: copies applied before are left out before the step, not refused by it', () => {
  let cfg: Config;
  let redis: Redis;
  let speed: SpeedLayer | undefined;
  const now = Date.now();
  const record = (id: string, ts: number): EventRecord => {
    const v = validateEvent({ event_id: id, event_type: 'click', user_id: 'u-steps', timestamp: ts }, now);
    if (!v.ok) throw new Error(v.detail);
    return { ...v.record, received_at: now - 1000 };
  };

  beforeAll(async () => {
    // Small steps: a batch of events a minute apart becomes several steps.
    cfg = await isolatedConfig('speed-dedupe-steps', { SPEED_PORT: '0', SPEED_STEP_MAX_ARGS: '1000' });
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    await speed?.stop();
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  it('in a later step of the same batch and in a later batch', async () => {
    const records = Array.from({ length: 60 }, (_, i) => record(`e-${i}`, now - 60_000 * (i + 1)));
    records.push(record('e-2', now - 60_000 * 3)); // the same batch, steps later
    // Produced before the speed layer starts: one fetch, so one batch of several steps.
    await produce(cfg, toMessages(records));
    speed = await startSpeedLayer(cfg, { alerts: false });
    await waitAllApplied(redis, cfg, 60_000);
    expect(await metricValue(speed, 'speed_batches_total', { result: 'applied' })).toBeGreaterThan(1);
    await produce(cfg, toMessages([record('e-5', now - 60_000 * 6), record('e-new', now - 60_000)]));
    await waitAllApplied(redis, cfg, 60_000);
    const minute = async (ts: number) => Number((await redis.hget(speedKeys(cfg).counts('minute', bucketStart(ts, 'minute')), countField(ALL, ALL, ALL))) ?? 0);
    expect(await minute(now - 60_000 * 3)).toBe(1);
    expect(await minute(now - 60_000 * 6)).toBe(1);
    expect(Number(await redis.hget(speedKeys(cfg).stats(), 'duplicates'))).toBe(2);
    expect(Number(await redis.hget(speedKeys(cfg).stats(), 'events'))).toBe(61);
    // No step was refused for a copy: each was left out before its fold.
    expect(await metricValue(speed, 'speed_batches_total', { result: 'duplicates' })).toBe(0);
  });
});
