/** The serving layer's consumer-lag rules (serving-layer/consumer-lag.ts), without Kafka. */
import { describe, expect, it } from 'vitest';
import { groupLag } from '../../common/topics';
import { lagAlerts, type GroupLag } from '../../serving-layer/consumer-lag';

const thresholds = { speed: { maxLag: 100, maxStallMs: 60_000 }, lake: { maxLag: 1000, maxStallMs: 300_000 } };
const reading = (role: 'speed' | 'lake', lag: number, committed: number): GroupLag => ({ role, groupId: `g-${role}`, lag, committed });

describe('groupLag', () => {
  const ends = [
    { partition: 0, high: 100, low: 0 },
    { partition: 1, high: 50, low: 20 },
    { partition: 2, high: 0, low: 0 },
  ];
  it('counts what is retained and not committed; a group without commits is behind by everything retained', () => {
    expect(groupLag(ends, new Map([[0, 90], [1, 50]]))).toEqual({ lag: 10, committed: 140 });
    expect(groupLag(ends, new Map())).toEqual({ lag: 130, committed: 0 });
    // A commit below the log start (messages deleted by retention) counts from the log start.
    expect(groupLag(ends, new Map([[0, 100], [1, 5]]))).toEqual({ lag: 30, committed: 105 });
  });
});

describe('lagAlerts', () => {
  it('fires a lag alert per group over its threshold, keeps its since while it fires, and resolves it', () => {
    const state = new Map();
    expect(lagAlerts([reading('speed', 50, 0), reading('lake', 50, 0)], thresholds, 'events.raw', state, 1000)).toEqual([]);
    const firing = lagAlerts([reading('speed', 500, 10), reading('lake', 500, 10)], thresholds, 'events.raw', state, 2000);
    expect(firing).toEqual([{ rule: 'speed_consumer_lag', layer: 'serving', since: 2000, value: 500, threshold: 100, message: '500 messages of events.raw not yet consumed by group g-speed' }]);
    expect(lagAlerts([reading('speed', 700, 20), reading('lake', 1500, 20)], thresholds, 'events.raw', state, 7000).map((a) => [a.rule, a.since, a.value])).toEqual([
      ['speed_consumer_lag', 2000, 700],
      ['lake_consumer_lag', 7000, 1500],
    ]);
    expect(lagAlerts([reading('speed', 0, 720), reading('lake', 1500, 30)], thresholds, 'events.raw', state, 9000).map((a) => a.rule)).toEqual(['lake_consumer_lag']);
    expect(lagAlerts([reading('speed', 200, 720), reading('lake', 0, 1530)], thresholds, 'events.raw', state, 10_000).map((a) => [a.rule, a.since])).toEqual([['speed_consumer_lag', 10_000]]);
  });

  it('fires a stall alert when the group is behind and its commits have not moved for longer than the limit', () => {
    const state = new Map();
    const t0 = 1_000_000;
    lagAlerts([reading('speed', 5, 100)], thresholds, 'events.raw', state, t0);
    expect(lagAlerts([reading('speed', 50, 100)], thresholds, 'events.raw', state, t0 + 60_000)).toEqual([]);
    const stalled = lagAlerts([reading('speed', 80, 100)], thresholds, 'events.raw', state, t0 + 61_000);
    expect(stalled).toMatchObject([{ rule: 'speed_consumer_stalled', since: t0 + 60_000, value: 61_000, threshold: 60_000 }]);
    // Progress resets the clock; nothing waiting is not a stall either.
    expect(lagAlerts([reading('speed', 80, 101)], thresholds, 'events.raw', state, t0 + 62_000)).toEqual([]);
    expect(lagAlerts([reading('speed', 0, 101)], thresholds, 'events.raw', state, t0 + 200_000)).toEqual([]);
    expect(lagAlerts([reading('speed', 3, 101)], thresholds, 'events.raw', state, t0 + 250_000)).toEqual([]);
  });
});
