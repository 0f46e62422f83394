/** Weekly replies of daily views: ISO weeks start on Monday (UTC), and only Monday buckets stay, recounted. */
import { describe, expect, it } from 'vitest';
import type { MergeResult } from '../../serving-layer/merge';
import { weekBuckets, weekStartOf } from '../../serving-layer/metrics';

const DAY = 86_400_000;
const MON = Date.parse('2025-02-03T00:00:00Z');

describe('weekStartOf', () => {
  it('floors any time of a week to its Monday 00:00 UTC', () => {
    expect(weekStartOf(MON)).toBe(MON);
    expect(weekStartOf(MON + 6 * DAY + DAY - 1)).toBe(MON);
    expect(weekStartOf(MON + 7 * DAY)).toBe(MON + 7 * DAY);
    expect(weekStartOf(MON - 1)).toBe(MON - 7 * DAY);
    expect(weekStartOf(0)).toBe(-3 * DAY); // 1970-01-01 was a Thursday
  });
});

describe('weekBuckets', () => {
  it('keeps the Monday buckets and recounts coverage, exact and complete over them', () => {
    const sources = ['batch', 'batch', 'batch', 'batch', 'batch', 'batch', 'batch', 'recomputing', 'batch', 'none'] as const;
    const buckets = sources.map((source, i) => ({ start: MON + i * DAY, source, exact: source === 'batch', covered: source !== 'none', value: source === 'none' ? null : i }));
    const result: MergeResult<number> = {
      metric: 'm',
      granularity: 'day',
      from: MON,
      to: MON + 10 * DAY,
      boundary: MON + 9 * DAY,
      coverage: { batch: 8, speed: 0, none: 1, recomputing: 1 },
      exact: false,
      complete: false,
      series: [{ key: {}, buckets }],
    };
    const weekly = weekBuckets(result);
    expect(weekly.series[0].buckets.map((b) => [b.start, b.source])).toEqual([
      [MON, 'batch'],
      [MON + 7 * DAY, 'recomputing'],
    ]);
    expect(weekly.coverage).toEqual({ batch: 1, speed: 0, none: 0, recomputing: 1 });
    expect(weekly.exact).toBe(false);
    expect(weekly.complete).toBe(true);
  });
});
