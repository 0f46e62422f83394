/**
 * The Lambda merge: the one place where the batch/speed time boundary is
 * applied (Pinot's hybrid-table time boundary, Cube's lambda pre-aggregation).
 * Every metric endpoint goes through `merge`; a metric only declares what each
 * layer can read.
 *
 * For [from, to) at a granularity, the bucket [b, b + g) is
 *   - batch        (exact)        when batchStart <= b, b + g <= W and every batch period in it is
 *                                 published and clean,
 *   - recomputing  (not exact)    when it is below W and published but some period in it is dirty
 *                                 (late data arrived; a re-run is due): the last published value,
 *   - speed        (approximate)  otherwise, when the speed layer still holds all of it,
 *   - none         (not covered)  otherwise: value null, never a zero; also a speed bucket while
 *                                 Redis cannot answer (a failover), with `reason: speed_unavailable`,
 *                                 so the batch buckets of the reply are still served.
 * Periods are judged one by one (`stateOf`), so one old or dirty period never
 * drags the boundary back over weeks of good data.
 * W = min(the layer's computed watermark, the operator's pin), see `boundaryOf`.
 * A bucket straddling W is served whole by the speed layer rather than summed
 * from both layers, so a bucket's value always comes from one layer and its
 * `exact` flag means what it says.
 */
import { BUCKET_MS, bucketsIn, bucketStart, type Granularity } from '../common/contract';
import { HLL_STANDARD_ERROR } from '../common/speed-keys';

export type Source = 'batch' | 'recomputing' | 'speed' | 'none';
/** A batch period's state: published and clean, published but dirty, or not published. */
export type PeriodState = 'exact' | 'recomputing' | 'missing';
export type PeriodKind = 'hourly' | 'daily';

/** Error bound of an estimate: the relative standard error and the absolute 95 % half-width (1.96 σ). */
export interface ErrorBound {
  method: 'hyperloglog';
  relative_std_error: number;
  /** value ± this is the 95 % confidence interval (1.96 × relative_std_error × value). */
  ci95: number;
}

export interface Bucket<V> {
  /** Bucket start, epoch ms (UTC). */
  start: number;
  source: Source;
  exact: boolean;
  covered: boolean;
  value: V | null;
  error?: ErrorBound;
  /** Why a bucket a layer should hold is `none`: the speed layer's store did not answer. */
  reason?: 'speed_unavailable';
}

export type SeriesKey = Record<string, string>;
export interface Series<V> {
  key: SeriesKey;
  buckets: Bucket<V>[];
}

/** What one layer returned: per series, a value per bucket start. A missing bucket of a covered range is the metric's zero. */
export type LayerRows<V> = Array<{ key: SeriesKey; values: Map<number, V> }>;

export interface LayerQuery<P> {
  params: P;
  granularity: Granularity;
  /** Contiguous, ascending bucket starts this layer must answer. */
  buckets: number[];
  /** [from, to) spanned by `buckets`. */
  from: number;
  to: number;
}

export interface BatchReader<P, V> {
  /** Which watermark governs this granularity (hourly views or daily views). */
  period(granularity: Granularity): PeriodKind;
  granularities: readonly Granularity[];
  read(q: LayerQuery<P> & { boundary: number }): Promise<LayerRows<V>>;
}

export interface SpeedReader<P, V> {
  granularities: readonly Granularity[];
  /** Whether the speed layer can answer these parameters at all (e.g. it keeps no app_version). */
  supports?(params: P): boolean;
  /** Whether the speed layer still holds all of [bucket, bucket + g). */
  covers(bucket: number, granularity: Granularity, now: number): boolean;
  read(q: LayerQuery<P>): Promise<LayerRows<V>>;
  /** Values the speed layer estimates (HLL) carry this relative standard error. */
  relativeStdError?: number;
  /** The measured error of an estimate of this size (overrides relativeStdError's textbook interval). */
  errorOf?: (estimate: number) => { relativeStdError: number; ci95: number };
}

export interface MetricDef<P, V> {
  name: string;
  granularities: readonly Granularity[];
  /** The value of a covered bucket for which a layer has no row (no events there). */
  zero(key: SeriesKey): V;
  /** The scalar an error bound applies to, for estimated values. */
  estimateOf?(value: V): number;
  batch?: BatchReader<P, V>;
  speed?: SpeedReader<P, V>;
}

/**
 * One period kind's batch coverage: [start, end) spans the published periods;
 * `stateOf` (with `periodMs`) judges each period in it. Without `stateOf` every
 * period in [start, end) is exact.
 */
export interface KindWatermark {
  start: number | null;
  end: number | null;
  periodMs?: number;
  stateOf?(periodStart: number): PeriodState;
}

/** The batch watermark as the serving layer applies it. Times are epoch ms; ends exclusive. */
export interface WatermarkView {
  hourly: KindWatermark;
  daily: KindWatermark;
  pinnedEnd: number | null;
}

export interface MergeQuery<P> {
  from: number;
  to: number;
  granularity: Granularity;
  params: P;
  /** Dimensions the caller grouped by; with none, the one series `{}` always exists. */
  groupBy: readonly string[];
}

export interface MergeResult<V> {
  metric: string;
  granularity: Granularity;
  from: number;
  to: number;
  /** W for this metric at this granularity (null: nothing is exact yet). */
  boundary: number | null;
  coverage: Coverage;
  /** Every bucket exact (all batch). */
  exact: boolean;
  /** Every bucket covered by some layer. */
  complete: boolean;
  series: Series<V>[];
}

/** Buckets per source; `recomputing` only when non-zero. */
export type Coverage = Record<'batch' | 'speed' | 'none', number> & { recomputing?: number };

export class MergeError extends Error {
  override name = 'MergeError';
  constructor(
    readonly parameter: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The end of exact data for a period kind: min(computed, pin); the start is where the contiguous published run begins.
 * Nothing is exact (both null) when that end is at or before the start. The replies' `watermark` is this too (status.ts).
 */
export function boundaryOf(w: WatermarkView, kind: PeriodKind): { start: number | null; end: number | null } {
  const computed = w[kind];
  if (computed.end === null || computed.start === null) return { start: null, end: null };
  const end = w.pinnedEnd === null ? computed.end : Math.min(computed.end, w.pinnedEnd);
  return end > computed.start ? { start: computed.start, end } : { start: null, end: null };
}

export function bucketsOf(from: number, to: number, granularity: Granularity, maxBuckets: number): number[] {
  if (!(to > from)) throw new MergeError('to', `to (${to}) must be after from (${from})`);
  const count = Math.ceil((to - bucketStart(from, granularity)) / BUCKET_MS[granularity]);
  if (count > maxBuckets) {
    throw new MergeError('to', `[from, to) spans ${count} ${granularity} buckets; at most ${maxBuckets} per query (narrow the range or use a coarser granularity)`);
  }
  return bucketsIn(from, to, granularity);
}

function keyId(key: SeriesKey): string {
  return JSON.stringify(Object.keys(key).sort().map((k) => [k, key[k]]));
}

function span(buckets: number[], granularity: Granularity): { from: number; to: number } {
  return { from: buckets[0], to: buckets[buckets.length - 1] + BUCKET_MS[granularity] };
}

export async function merge<P, V>(
  def: MetricDef<P, V>,
  q: MergeQuery<P>,
  ctx: { watermark: WatermarkView; now: number; maxBuckets: number },
): Promise<MergeResult<V>> {
  if (!def.granularities.includes(q.granularity)) {
    throw new MergeError('granularity', `${def.name} is available at ${def.granularities.join(', ')}, not ${q.granularity}`);
  }
  const size = BUCKET_MS[q.granularity];
  const all = bucketsOf(q.from, q.to, q.granularity, ctx.maxBuckets);

  const batch = def.batch && def.batch.granularities.includes(q.granularity) ? def.batch : undefined;
  const kind = batch ? batch.period(q.granularity) : undefined;
  const bound = kind ? boundaryOf(ctx.watermark, kind) : { start: null, end: null };
  const kindView = kind ? ctx.watermark[kind] : undefined;
  /** The worst state of the batch periods a bucket overlaps. */
  const batchState = (b: number): PeriodState => {
    const stateOf = kindView?.stateOf;
    const ps = kindView?.periodMs;
    if (!stateOf || !ps) return 'exact';
    let worst: PeriodState = 'exact';
    for (let p = Math.floor(b / ps) * ps; p < b + size; p += ps) {
      const st = stateOf(p);
      if (st === 'missing') return 'missing';
      if (st === 'recomputing') worst = 'recomputing';
    }
    return worst;
  };
  const speed =
    def.speed && def.speed.granularities.includes(q.granularity) && (def.speed.supports?.(q.params) ?? true) ? def.speed : undefined;

  const sourceOf = new Map<number, Source>();
  for (const b of all) {
    const state = bound.start !== null && bound.end !== null && b >= bound.start && b + size <= bound.end ? batchState(b) : 'missing';
    if (state === 'exact') sourceOf.set(b, 'batch');
    else if (state === 'recomputing') sourceOf.set(b, 'recomputing');
    else if (speed?.covers(b, q.granularity, ctx.now)) sourceOf.set(b, 'speed');
    else sourceOf.set(b, 'none');
  }
  // Recomputing buckets show the last published (batch) value, labelled as not exact.
  const batchBuckets = all.filter((b) => sourceOf.get(b) === 'batch' || sourceOf.get(b) === 'recomputing');
  const speedBuckets = all.filter((b) => sourceOf.get(b) === 'speed');
  const recomputing = all.filter((b) => sourceOf.get(b) === 'recomputing').length;

  const speedUnavailable = new Set<number>();
  const [batchRows, speedRows] = await Promise.all([
    batch && batchBuckets.length > 0
      ? batch.read({ params: q.params, granularity: q.granularity, buckets: batchBuckets, ...span(batchBuckets, q.granularity), boundary: bound.end! })
      : Promise.resolve([] as LayerRows<V>),
    speed && speedBuckets.length > 0
      ? speed.read({ params: q.params, granularity: q.granularity, buckets: speedBuckets, ...span(speedBuckets, q.granularity) }).catch((): LayerRows<V> => {
          // Redis failing over or down: its buckets are unknown, not zero; the batch buckets stand.
          for (const b of speedBuckets) {
            sourceOf.set(b, 'none');
            speedUnavailable.add(b);
          }
          return [];
        })
      : Promise.resolve([] as LayerRows<V>),
  ]);
  const servedSpeed = speedBuckets.length - speedUnavailable.size;

  // Series are the union of what both layers saw; a series one layer lacks is zero in that layer's covered buckets.
  const keys = new Map<string, SeriesKey>();
  if (q.groupBy.length === 0) keys.set(keyId({}), {});
  const index = (rows: LayerRows<V>) => {
    const m = new Map<string, Map<number, V>>();
    for (const r of rows) {
      const id = keyId(r.key);
      if (!keys.has(id)) keys.set(id, r.key);
      const prev = m.get(id);
      if (prev) for (const [b, v] of r.values) prev.set(b, v);
      else m.set(id, new Map(r.values));
    }
    return m;
  };
  const fromBatch = index(batchRows);
  const fromSpeed = index(speedRows);

  // `recomputing` appears only when some bucket is, so clients that know three sources see no change otherwise.
  const coverage: Coverage = {
    batch: batchBuckets.length - recomputing,
    speed: servedSpeed,
    none: all.length - batchBuckets.length - servedSpeed,
    ...(recomputing > 0 ? { recomputing } : {}),
  };
  const rse = speed?.relativeStdError;
  const series: Series<V>[] = [...keys.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([id, key]) => ({
      key,
      buckets: all.map((start): Bucket<V> => {
        const source = sourceOf.get(start)!;
        if (source === 'none') {
          return speedUnavailable.has(start)
            ? { start, source, exact: false, covered: false, value: null, reason: 'speed_unavailable' }
            : { start, source, exact: false, covered: false, value: null };
        }
        const layer = source === 'speed' ? fromSpeed : fromBatch;
        const value = layer.get(id)?.get(start) ?? def.zero(key);
        const bucket: Bucket<V> = { start, source, exact: source === 'batch', covered: true, value };
        if (source === 'speed' && rse !== undefined && def.estimateOf) {
          const estimate = def.estimateOf(value);
          const bound = speed?.errorOf?.(estimate);
          bucket.error = bound
            ? { method: 'hyperloglog', relative_std_error: bound.relativeStdError, ci95: bound.ci95 }
            : { method: 'hyperloglog', relative_std_error: rse, ci95: 1.96 * rse * estimate };
        }
        return bucket;
      }),
    }));

  return {
    metric: def.name,
    granularity: q.granularity,
    from: all[0],
    to: all[all.length - 1] + size,
    boundary: bound.end,
    coverage,
    exact: coverage.batch === all.length,
    complete: coverage.none === 0,
    series,
  };
}

export { HLL_STANDARD_ERROR };
