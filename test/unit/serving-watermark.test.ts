/**
 * The watermark the API reports is the one the merge applies: both come from
 * `boundaryOf`, so a pin at or before the first published period reports
 * nothing exact instead of an end before its start.
 */
import { describe, expect, it } from 'vitest';
import { BUCKET_MS } from '../../common/contract';
import { boundaryOf, merge, type MetricDef, type WatermarkView } from '../../serving-layer/merge';
import { appliedWatermark } from '../../serving-layer/status';

const H = BUCKET_MS.hour;
const T0 = Date.parse('2025-01-10T00:00:00Z');

type Run = { start: number | null; end: number | null };
const view = (hourly: Run, pinnedEnd: number | null, daily: Run = { start: T0, end: T0 + 24 * H }): WatermarkView => ({ hourly, daily, pinnedEnd });

const batchOnly: MetricDef<unknown, number> = {
  name: 'batch_only',
  granularities: ['hour'],
  zero: () => 0,
  batch: { granularities: ['hour'], period: () => 'hourly', read: async (q) => [{ key: {}, values: new Map(q.buckets.map((b) => [b, 1])) }] },
};

describe('appliedWatermark', () => {
  it('reports min(computed, pin) when the pin falls inside the published run', () => {
    expect(appliedWatermark(view({ start: T0, end: T0 + 4 * H }, T0 + 2 * H))).toMatchObject({ hourly_start: T0, hourly_end: T0 + 2 * H, pinned_end: T0 + 2 * H });
    expect(appliedWatermark(view({ start: T0, end: T0 + 4 * H }, null))).toMatchObject({ hourly_start: T0, hourly_end: T0 + 4 * H, pinned_end: null });
  });

  it('reports nothing exact when the pin is at or before the start (end <= start), as the merge applies it', async () => {
    for (const pin of [T0, T0 - H, 0]) {
      const w = view({ start: T0, end: T0 + 4 * H }, pin);
      const reported = appliedWatermark(w);
      expect(reported).toMatchObject({ hourly_start: null, hourly_end: null, pinned_end: pin });
      expect({ start: reported.hourly_start, end: reported.hourly_end }).toEqual(boundaryOf(w, 'hourly'));
      // The daily run starts at T0 too, so the same pin leaves it nothing exact either.
      expect({ start: reported.daily_start, end: reported.daily_end }).toEqual({ start: null, end: null });
      const merged = await merge(batchOnly, { from: T0, to: T0 + 4 * H, granularity: 'hour', params: {}, groupBy: [] }, { watermark: w, now: T0 + 5 * H, maxBuckets: 100 });
      expect(merged.boundary).toBe(reported.hourly_end);
      expect(merged.coverage.batch).toBe(0);
    }
  });

  it('reports nothing exact while nothing is published', () => {
    expect(appliedWatermark(view({ start: null, end: null }, null, { start: null, end: null }))).toEqual({ hourly_start: null, hourly_end: null, daily_start: null, daily_end: null, pinned_end: null });
  });
});
