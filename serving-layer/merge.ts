/**
 * The Lambda merge: the one place where the batch/speed time boundary is
 * applied (Pinot's hybrid-table time boundary, Cube's lambda pre-aggregation).
 * Every metric endpoint goes through `merge`; a metric only declares what each
 * layer can read.
 *
 * For [from, to) at a granularity, the bucket [b, b + g) is
 *   - batch  (exact)        when batchStart <= b and b + g <= W,
 *   - speed  (approximate)  otherwise, when the speed layer still holds all of it,
 *   - none   (not covered)  otherwise: value null, never a zero.
 * W = min(the layer's computed watermark, the operator's pin), see `boundaryOf`.
 * A bucket straddling W is served whole by the speed layer rather than summed
 * from both layers, so a bucket's value always comes from one layer and its
 * `exact` flag means what it says.
 */
import { BUCKET_MS, bucketStart, type Granularity } from '../common/contract';
import { HLL_STANDARD_ERROR } from '../common/speed-keys';

export type Source = 'batch' | 'speed' | 'none';
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

/** The batch watermark as the serving layer applies it. Times are epoch ms; ends exclusive. */
export interface WatermarkView {
  hourly: { start: number | null; end: number | null };
  daily: { start: number | null; end: number | null };
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
  coverage: Record<Source, number>;
  /** Every bucket exact (all batch). */
  exact: boolean;
  /** Every bucket covered by some layer. */
  complete: boolean;
  series: Series<V>[];
}

export class MergeError extends Error {
  override name = 'MergeError';
  constructor(
    readonly parameter: string,
    message: string,
  ) {
    super(message);
  }
}

/** The end of exact data for a period kind: min(computed, pin); the start is where the contiguous published run begins. */
export function boundaryOf(w: WatermarkView, kind: PeriodKind): { start: number | null; end: number | null } {
  const computed = w[kind];
  if (computed.end === null || computed.start === null) return { start: null, end: null };
  const end = w.pinnedEnd === null ? computed.end : Math.min(computed.end, w.pinnedEnd);
  return end > computed.start ? { start: computed.start, end } : { start: null, end: null };
}

export function bucketsOf(from: number, to: number, granularity: Granularity, maxBuckets: number): number[] {
  if (!(to > from)) throw new MergeError('to', `to (${to}) must be after from (${from})`);
  const size = BUCKET_MS[granularity];
  const first = bucketStart(from, granularity);
  const count = Math.ceil((to - first) / size);
  if (count > maxBuckets) {
    throw new MergeError('to', `[from, to) spans ${count} ${granularity} buckets; at most ${maxBuckets} per query (narrow the range or use a coarser granularity)`);
  }
  return Array.from({ length: count }, (_, i) => first + i * size);
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
  const bound = batch ? boundaryOf(ctx.watermark, batch.period(q.granularity)) : { start: null, end: null };
  const speed =
    def.speed && def.speed.granularities.includes(q.granularity) && (def.speed.supports?.(q.params) ?? true) ? def.speed : undefined;

  const sourceOf = new Map<number, Source>();
  for (const b of all) {
    if (bound.start !== null && bound.end !== null && b >= bound.start && b + size <= bound.end) sourceOf.set(b, 'batch');
    else if (speed?.covers(b, q.granularity, ctx.now)) sourceOf.set(b, 'speed');
    else sourceOf.set(b, 'none');
  }
  const batchBuckets = all.filter((b) => sourceOf.get(b) === 'batch');
  const speedBuckets = all.filter((b) => sourceOf.get(b) === 'speed');

  const [batchRows, speedRows] = await Promise.all([
    batch && batchBuckets.length > 0
      ? batch.read({ params: q.params, granularity: q.granularity, buckets: batchBuckets, ...span(batchBuckets, q.granularity), boundary: bound.end! })
      : Promise.resolve([] as LayerRows<V>),
    speed && speedBuckets.length > 0
      ? speed.read({ params: q.params, granularity: q.granularity, buckets: speedBuckets, ...span(speedBuckets, q.granularity) })
      : Promise.resolve([] as LayerRows<V>),
  ]);

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

  const coverage: Record<Source, number> = { batch: batchBuckets.length, speed: speedBuckets.length, none: all.length - batchBuckets.length - speedBuckets.length };
  const rse = speed?.relativeStdError;
  const series: Series<V>[] = [...keys.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([id, key]) => ({
      key,
      buckets: all.map((start): Bucket<V> => {
        const source = sourceOf.get(start)!;
        if (source === 'none') return { start, source, exact: false, covered: false, value: null };
        const layer = source === 'batch' ? fromBatch : fromSpeed;
        const value = layer.get(id)?.get(start) ?? def.zero(key);
        const bucket: Bucket<V> = { start, source, exact: source === 'batch', covered: true, value };
        if (source === 'speed' && rse !== undefined && def.estimateOf) {
          bucket.error = { method: 'hyperloglog', relative_std_error: rse, ci95: 1.96 * rse * def.estimateOf(value) };
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
