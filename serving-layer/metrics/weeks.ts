/**
 * Weekly answers of daily views: an ISO week is a day-granularity merge folded to one bucket
 * per week, named by its Monday (the day grid and the daily watermark stay the ones every daily
 * view uses). A weekly batch read gives the week's value to each of its days; the week then takes
 * the source of its latest covered day, so a week whose Monday was never published (the lake
 * starts mid-week) is still answered.
 */
import { BUCKET_MS } from '../../common/contract';
import type { Bucket, Coverage, MergeResult } from '../merge';

const DAY = BUCKET_MS.day;

/** The Monday (00:00 UTC) of the ISO week holding `ms`. 1970-01-01 was a Thursday. */
export function weekStartOf(ms: number): number {
  const day = Math.floor(ms / DAY);
  return (day - ((day + 3) % 7)) * DAY;
}

/** The same value keyed by each day of the week starting at `weekStart`. */
export function eachDayOfWeek<V>(values: Map<number, V>, weekStart: number, value: V): void {
  for (let i = 0; i < 7; i++) values.set(weekStart + i * DAY, value);
}

/** One bucket per week (its latest covered day, at its Monday), coverage and flags recounted over them. */
export function weekBuckets<V>(result: MergeResult<V>): MergeResult<V> {
  const series = result.series.map((s) => {
    const weeks = new Map<number, Bucket<V>>();
    for (const b of s.buckets) {
      const w = weekStartOf(b.start);
      const seen = weeks.get(w);
      if (!seen || b.source !== 'none') weeks.set(w, { ...b, start: w });
    }
    return { ...s, buckets: [...weeks.values()] };
  });
  const buckets = series[0]?.buckets ?? [];
  const coverage: Coverage = { batch: 0, speed: 0, none: 0 };
  for (const b of buckets) {
    if (b.source === 'recomputing') coverage.recomputing = (coverage.recomputing ?? 0) + 1;
    else coverage[b.source]++;
  }
  return { ...result, series, coverage, exact: coverage.batch === buckets.length, complete: coverage.none === 0 };
}
