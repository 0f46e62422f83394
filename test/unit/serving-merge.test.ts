/**
 * The Lambda merge with fake layers: which layer answers each bucket around the
 * watermark W, the operator's pin, buckets neither layer holds, exact flags and
 * HLL error bounds.
 */
import { describe, expect, it } from 'vitest';
import { BUCKET_MS } from '../../common/contract';
import { MergeError, boundaryOf, merge, type LayerQuery, type MetricDef, type WatermarkView } from '../../serving-layer/merge';

const H = BUCKET_MS.hour;
const T0 = Date.parse('2025-01-10T00:00:00Z');

/** A metric whose batch value is 1000 + hour index and speed value 2000 + hour index, so the source shows in the value. */
function fakeMetric(opts: { speedFrom?: number; estimate?: boolean; calls?: Array<{ layer: string; q: LayerQuery<unknown> }> } = {}): MetricDef<unknown, number> {
  const calls = opts.calls ?? [];
  return {
    name: 'fake',
    granularities: ['hour', 'day'],
    zero: () => 0,
    estimateOf: opts.estimate ? (v) => v : undefined,
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        calls.push({ layer: 'batch', q });
        // Hour 2 has no row: a published hour without events is a true zero.
        return [{ key: {}, values: new Map(q.buckets.filter((b) => b !== T0 + 2 * H).map((b) => [b, 1000 + (b - T0) / H])) }];
      },
    },
    speed: {
      granularities: ['hour'],
      relativeStdError: opts.estimate ? 0.0081 : undefined,
      covers: (b) => b >= (opts.speedFrom ?? T0),
      async read(q) {
        calls.push({ layer: 'speed', q });
        return [{ key: {}, values: new Map(q.buckets.map((b) => [b, 2000 + (b - T0) / H])) }];
      },
    },
  };
}

const watermark = (end: number | null, pinnedEnd: number | null = null, start: number | null = T0): WatermarkView => ({
  hourly: { start: end === null ? null : start, end },
  daily: { start: null, end: null },
  pinnedEnd,
});
const ctx = (w: WatermarkView) => ({ watermark: w, now: T0 + 100 * H, maxBuckets: 1000 });
const q = (from: number, to: number, granularity: 'hour' | 'day' = 'hour') => ({ from, to, granularity, params: {}, groupBy: [] as string[] });

describe('merge: the time boundary W', () => {
  it('serves buckets ending at or before W from batch (exact) and the rest from speed (approximate)', async () => {
    const r = await merge(fakeMetric(), q(T0, T0 + 6 * H), ctx(watermark(T0 + 4 * H)));
    const b = r.series[0].buckets;
    expect(b.map((x) => x.source)).toEqual(['batch', 'batch', 'batch', 'batch', 'speed', 'speed']);
    expect(b.map((x) => x.exact)).toEqual([true, true, true, true, false, false]);
    expect(b.map((x) => x.value)).toEqual([1000, 1001, 0, 1003, 2004, 2005]);
    expect(b.every((x) => x.covered)).toBe(true);
    expect(r.boundary).toBe(T0 + 4 * H);
    expect(r.coverage).toEqual({ batch: 4, speed: 2, none: 0 });
    expect(r.exact).toBe(false);
    expect(r.complete).toBe(true);
  });

  it('asks each layer only for its own buckets', async () => {
    const calls: Array<{ layer: string; q: LayerQuery<unknown> }> = [];
    await merge(fakeMetric({ calls }), q(T0, T0 + 6 * H), ctx(watermark(T0 + 4 * H)));
    expect(calls.find((c) => c.layer === 'batch')!.q).toMatchObject({ from: T0, to: T0 + 4 * H, buckets: [0, 1, 2, 3].map((i) => T0 + i * H) });
    expect(calls.find((c) => c.layer === 'speed')!.q).toMatchObject({ from: T0 + 4 * H, to: T0 + 6 * H });
  });

  it('is all batch and exact when the range ends before W', async () => {
    const r = await merge(fakeMetric(), q(T0 + H, T0 + 3 * H), ctx(watermark(T0 + 10 * H)));
    expect(r.exact).toBe(true);
    expect(r.series[0].buckets.map((b) => b.source)).toEqual(['batch', 'batch']);
  });

  it('serves a bucket that straddles W whole from speed, and the layer without the granularity leaves it uncovered', async () => {
    // Day granularity: batch has the first 4 hours only, speed keeps no day buckets.
    const r = await merge(fakeMetric(), q(T0, T0 + 2 * 24 * H, 'day'), ctx(watermark(T0 + 4 * H)));
    expect(r.series[0].buckets.map((b) => [b.source, b.covered, b.value])).toEqual([
      ['none', false, null],
      ['none', false, null],
    ]);
    const full = await merge(fakeMetric(), q(T0, T0 + 24 * H, 'day'), ctx(watermark(T0 + 24 * H)));
    expect(full.series[0].buckets[0]).toMatchObject({ source: 'batch', exact: true, covered: true });
  });

  it('applies the pin: W = min(computed, pinned)', async () => {
    const r = await merge(fakeMetric(), q(T0, T0 + 6 * H), ctx(watermark(T0 + 4 * H, T0 + 2 * H)));
    expect(r.series[0].buckets.map((b) => b.source)).toEqual(['batch', 'batch', 'speed', 'speed', 'speed', 'speed']);
    expect(r.boundary).toBe(T0 + 2 * H);
    // A pin later than the computed watermark changes nothing.
    const later = await merge(fakeMetric(), q(T0, T0 + 6 * H), ctx(watermark(T0 + 4 * H, T0 + 50 * H)));
    expect(later.boundary).toBe(T0 + 4 * H);
    // A pin at or before the first published period leaves nothing exact.
    expect(boundaryOf(watermark(T0 + 4 * H, T0), 'hourly')).toEqual({ start: null, end: null });
  });

  it('marks buckets neither layer holds as none / not covered / null, never zero', async () => {
    // Speed only keeps hours from T0 + 5H; batch ends at T0 + 3H.
    const r = await merge(fakeMetric({ speedFrom: T0 + 5 * H }), q(T0, T0 + 7 * H), ctx(watermark(T0 + 3 * H)));
    const b = r.series[0].buckets;
    expect(b.map((x) => x.source)).toEqual(['batch', 'batch', 'batch', 'none', 'none', 'speed', 'speed']);
    for (const x of b.slice(3, 5)) expect(x).toEqual({ start: x.start, source: 'none', exact: false, covered: false, value: null });
    expect(r.complete).toBe(false);
    expect(r.coverage.none).toBe(2);
  });

  it('treats time before the first published period as not batch (the lake may not have been processed there)', async () => {
    const r = await merge(fakeMetric({ speedFrom: T0 + 100 * H }), q(T0 - 2 * H, T0 + H), ctx(watermark(T0 + 3 * H)));
    expect(r.series[0].buckets.map((b) => b.source)).toEqual(['none', 'none', 'batch']);
  });

  it('with no watermark everything comes from speed', async () => {
    const r = await merge(fakeMetric(), q(T0, T0 + 2 * H), ctx(watermark(null)));
    expect(r.boundary).toBeNull();
    expect(r.series[0].buckets.map((b) => b.source)).toEqual(['speed', 'speed']);
  });

  it('attaches HLL error bounds (1.96 × 0.81 % × value) to speed estimates only', async () => {
    const r = await merge(fakeMetric({ estimate: true }), q(T0, T0 + 2 * H), ctx(watermark(T0 + H)));
    const [batch, speed] = r.series[0].buckets;
    expect(batch.error).toBeUndefined();
    expect(speed.error).toEqual({ method: 'hyperloglog', relative_std_error: 0.0081, ci95: 1.96 * 0.0081 * 2001 });
  });

  it('unions the series of both layers; a series missing in a covered bucket is zero', async () => {
    const def: MetricDef<unknown, number> = {
      name: 'grouped',
      granularities: ['hour'],
      zero: () => 0,
      batch: { granularities: ['hour'], period: () => 'hourly', read: async () => [{ key: { event_type: 'click' }, values: new Map([[T0, 5]]) }] },
      speed: { granularities: ['hour'], covers: () => true, read: async () => [{ key: { event_type: 'search' }, values: new Map([[T0 + H, 7]]) }] },
    };
    const r = await merge(def, { ...q(T0, T0 + 2 * H), groupBy: ['event_type'] }, ctx(watermark(T0 + H)));
    expect(r.series.map((s) => [s.key.event_type, s.buckets.map((b) => b.value)])).toEqual([
      ['click', [5, 0]],
      ['search', [0, 7]],
    ]);
  });

  it('rejects an empty or oversized range naming `to`, and a granularity the metric lacks', async () => {
    await expect(merge(fakeMetric(), q(T0, T0), ctx(watermark(null)))).rejects.toMatchObject({ parameter: 'to' });
    await expect(merge(fakeMetric(), q(T0, T0 + 2000 * H), ctx(watermark(null)))).rejects.toBeInstanceOf(MergeError);
    await expect(merge(fakeMetric(), { ...q(T0, T0 + H), granularity: 'second' }, ctx(watermark(null)))).rejects.toMatchObject({ parameter: 'granularity' });
  });
});

describe('merge: the speed layer unreachable (a Redis failover)', () => {
  it('serves the batch buckets and marks the speed buckets none with a reason, instead of failing the reply', async () => {
    const def = fakeMetric();
    def.speed!.read = async () => {
      throw new Error('All sentinels are unreachable');
    };
    const r = await merge(def, q(T0, T0 + 6 * H), ctx(watermark(T0 + 4 * H)));
    const b = r.series[0].buckets;
    expect(b.map((x) => [x.source, x.value, x.reason])).toEqual([
      ['batch', 1000, undefined],
      ['batch', 1001, undefined],
      ['batch', 0, undefined],
      ['batch', 1003, undefined],
      ['none', null, 'speed_unavailable'],
      ['none', null, 'speed_unavailable'],
    ]);
    expect(r.coverage).toEqual({ batch: 4, speed: 0, none: 2 });
    expect(r.complete).toBe(false);
  });
});
