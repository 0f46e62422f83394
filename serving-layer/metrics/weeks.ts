/**
 * Weekly answers of daily views: an ISO week is the day bucket of its Monday, so a weekly reply
 * is a day-granularity merge whose buckets other than Mondays are dropped (the day grid and the
 * daily watermark stay the ones every daily view uses).
 */
import { BUCKET_MS } from '../../common/contract';
import type { Coverage, MergeResult } from '../merge';

const DAY = BUCKET_MS.day;

/** The Monday (00:00 UTC) of the ISO week holding `ms`. 1970-01-01 was a Thursday. */
export function weekStartOf(ms: number): number {
  const day = Math.floor(ms / DAY);
  return (day - ((day + 3) % 7)) * DAY;
}

/** The reply with only its Monday buckets, its coverage and flags recounted over them. */
export function weekBuckets<V>(result: MergeResult<V>): MergeResult<V> {
  const series = result.series.map((s) => ({ ...s, buckets: s.buckets.filter((b) => weekStartOf(b.start) === b.start) }));
  const buckets = series[0]?.buckets ?? [];
  const coverage: Coverage = { batch: 0, speed: 0, none: 0 };
  for (const b of buckets) {
    if (b.source === 'recomputing') coverage.recomputing = (coverage.recomputing ?? 0) + 1;
    else coverage[b.source]++;
  }
  return { ...result, series, coverage, exact: coverage.batch === buckets.length, complete: coverage.none === 0 };
}
