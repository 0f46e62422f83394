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
import { produce, toMessages, waitAllApplied } from './speed-support';

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
