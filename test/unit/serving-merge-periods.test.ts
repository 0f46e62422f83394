/**
 * The merge judges batch periods one by one: a dirty period's buckets say
 * `recomputing` (last published value, not exact), an unpublished one falls to
 * speed or none, and neither drags the boundary back over the good periods.
 */
import { describe, expect, it } from 'vitest';
import { merge, type MetricDef, type PeriodState, type WatermarkView } from '../../serving-layer/merge';

const H = 3_600_000;
const T0 = Date.UTC(2026, 0, 1);

function metric(): MetricDef<Record<string, never>, number> {
  return {
    name: 'events',
    granularities: ['hour', 'day'],
    zero: () => 0,
    batch: {
      period: () => 'hourly',
      granularities: ['hour', 'day'],
      read: async (q) => [{ key: {}, values: new Map(q.buckets.map((b) => [b, 1000 + (b - T0) / H])) }],
    },
    speed: {
      granularities: ['hour'],
      covers: (b) => b >= T0 + 20 * H,
      read: async (q) => [{ key: {}, values: new Map(q.buckets.map((b) => [b, 2000])) }],
    },
  };
}

function view(states: Record<number, PeriodState>, start: number, end: number, pinnedEnd: number | null = null): WatermarkView {
  return {
    hourly: { start, end, periodMs: H, stateOf: (p) => states[(p - T0) / H] ?? 'exact' },
    daily: { start: null, end: null },
    pinnedEnd,
  };
}
const q = (from: number, to: number, granularity: 'hour' | 'day' = 'hour') => ({ from, to, granularity, params: {}, groupBy: [] as string[] });

describe('merge: per-period batch state', () => {
  it('labels a dirty hour recomputing and keeps the hours after it exact', async () => {
    const r = await merge(metric(), q(T0, T0 + 6 * H), { watermark: view({ 2: 'recomputing' }, T0, T0 + 6 * H), now: T0 + 30 * H, maxBuckets: 100 });
    const b = r.series[0].buckets;
    expect(b.map((x) => x.source)).toEqual(['batch', 'batch', 'recomputing', 'batch', 'batch', 'batch']);
    expect(b.map((x) => x.exact)).toEqual([true, true, false, true, true, true]);
    expect(b[2].value).toBe(1002);
    expect(r.coverage).toEqual({ batch: 5, speed: 0, none: 0, recomputing: 1 });
    expect(r.exact).toBe(false);
    expect(r.boundary).toBe(T0 + 6 * H);
  });

  it('an unpublished hour in the middle is not covered (or speed), the rest stays exact', async () => {
    const r = await merge(metric(), q(T0, T0 + 24 * H), { watermark: view({ 3: 'missing', 21: 'missing' }, T0, T0 + 24 * H), now: T0 + 30 * H, maxBuckets: 100 });
    const src = r.series[0].buckets.map((x) => x.source);
    expect(src[3]).toBe('none');
    expect(src[21]).toBe('speed');
    expect(src.filter((s) => s === 'batch')).toHaveLength(22);
  });

  it('a day bucket over hourly views is recomputing if any of its hours is dirty, missing if any is unpublished', async () => {
    const w = view({ 5: 'recomputing', 30: 'missing' }, T0, T0 + 48 * H);
    const r = await merge(metric(), q(T0, T0 + 48 * H, 'day'), { watermark: w, now: T0 + 30 * H, maxBuckets: 100 });
    expect(r.series[0].buckets.map((x) => x.source)).toEqual(['recomputing', 'none']);
  });

  it('the pin still caps what is served from the batch layer', async () => {
    const r = await merge(metric(), q(T0, T0 + 4 * H), { watermark: view({}, T0, T0 + 4 * H, T0 + 2 * H), now: T0 + 30 * H, maxBuckets: 100 });
    expect(r.series[0].buckets.map((x) => x.source)).toEqual(['batch', 'batch', 'none', 'none']);
  });
});
