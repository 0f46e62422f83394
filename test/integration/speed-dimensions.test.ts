/**
 * One client sending a new device_type with every event must not be able to
 * create a key per value: past SPEED_MAX_DEVICE_TYPES_PER_DAY values a day,
 * the speed layer counts new ones as `other` — the totals stay exact, the keys
 * stay bounded, and the overflow is counted.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { ALL, bucketStart, validateEvent, type EventRecord } from '../../common/contract';
import { readCountCellsAt, readUserDevices } from '../../common/speed-keys';
import { OTHER } from '../../speed-layer/dimensions';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { produce, toMessages, waitAllApplied } from './speed-support';

const CAP = 5;
const DEVICES = 40;
const EVENTS = 400;

describe('speed layer: bounded dimension cardinality', () => {
  let cfg: Config;
  let redis: Redis;
  let speed: SpeedLayer;
  const now = Date.now();
  // One minute of event time, a few minutes old: every event lands in the same minute, hour and day.
  const ts = bucketStart(now - 5 * 60_000, 'minute') + 30_000;
  const records: EventRecord[] = [];

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-dims', { SPEED_PORT: '0', SPEED_MAX_DEVICE_TYPES_PER_DAY: String(CAP) });
    redis = redisClient(cfg);
    for (let i = 0; i < EVENTS; i++) {
      const v = validateEvent({ event_id: `dim-${i}`, event_type: 'click', user_id: `u${i % 25}`, timestamp: ts, properties: { device_type: `dev-${i % DEVICES}` } }, now);
      if (!v.ok) throw new Error(v.detail);
      records.push(v.record);
    }
    speed = await startSpeedLayer(cfg, { alerts: false });
    await produce(cfg, toMessages(records));
    await waitAllApplied(redis, cfg, 120_000);
  }, 180_000);

  afterAll(async () => {
    await speed?.stop();
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  it('creates HyperLogLog keys for at most the bound (plus other and ALL), and counts every event', async () => {
    const devices = await readUserDevices(redis, cfg, 'minute', bucketStart(ts, 'minute'));
    expect(devices).toContain(ALL);
    expect(devices).toContain(OTHER);
    expect(devices.length).toBe(CAP + 2);

    // Totals are exact: every event is counted, under its own device or under other.
    const [cells] = await readCountCellsAt(redis, cfg, 'minute', [bucketStart(ts, 'minute')]);
    const byDevice = new Map<string, number>();
    for (const c of cells) {
      if (c.eventType === 'click' && c.country === ALL && c.deviceType !== ALL) byDevice.set(c.deviceType, (byDevice.get(c.deviceType) ?? 0) + c.events);
    }
    expect([...byDevice.values()].reduce((a, b) => a + b, 0)).toBe(EVENTS);
    expect(byDevice.size).toBe(CAP + 1);
    // The admitted values each keep their exact count (10 events each: 400 events over 40 devices).
    for (const [d, n] of byDevice) if (d !== OTHER) expect(n).toBe(EVENTS / DEVICES);
    expect(byDevice.get(OTHER)).toBe(EVENTS - CAP * (EVENTS / DEVICES));

    const overflow = await speed.metrics.registry.getSingleMetricAsString('speed_dimension_overflow_total');
    expect(overflow).toMatch(new RegExp(`speed_dimension_overflow_total\\{dimension="device_type"\\} ${EVENTS - CAP * (EVENTS / DEVICES)}`));
  });
});
