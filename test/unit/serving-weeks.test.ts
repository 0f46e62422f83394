/** Weekly replies of daily views: ISO weeks start on Monday (UTC); each week is folded into one bucket at its Monday, recounted. */
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
  const result = (sources: readonly ('batch' | 'recomputing' | 'none')[]): MergeResult<number> => ({
    metric: 'm',
    granularity: 'day',
    from: MON,
    to: MON + sources.length * DAY,
    boundary: null,
    coverage: { batch: 0, speed: 0, none: 0 },
    exact: false,
    complete: false,
    series: [{ key: {}, buckets: sources.map((source, i) => ({ start: MON + i * DAY, source, exact: source === 'batch', covered: source !== 'none', value: source === 'none' ? null : i })) }],
  });

  it('folds each week into its latest covered day, at its Monday, and recounts coverage', () => {
    const weekly = weekBuckets(result(['batch', 'batch', 'batch', 'batch', 'batch', 'batch', 'recomputing', 'batch', 'batch', 'none']));
    expect(weekly.series[0].buckets.map((b) => [b.start, b.source, b.value])).toEqual([
      [MON, 'recomputing', 6],
      [MON + 7 * DAY, 'batch', 8],
    ]);
    expect(weekly.coverage).toEqual({ batch: 1, speed: 0, none: 0, recomputing: 1 });
    expect(weekly.exact).toBe(false);
    expect(weekly.complete).toBe(true);
  });

  it('answers a week whose Monday is not covered (the lake starts mid-week), and leaves an uncovered week none', () => {
    const weekly = weekBuckets(result(['none', 'none', 'batch', 'batch', 'none', 'none', 'none', 'none', 'none']));
    expect(weekly.series[0].buckets.map((b) => [b.start, b.source, b.value])).toEqual([
      [MON, 'batch', 3],
      [MON + 7 * DAY, 'none', null],
    ]);
    expect(weekly.coverage).toEqual({ batch: 1, speed: 0, none: 1 });
    expect(weekly.complete).toBe(false);
  });
});
