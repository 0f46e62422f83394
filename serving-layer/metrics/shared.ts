/**
 * What the metric files share: their sources, the dimension lists, the SQL
 * fragments every batch statement uses (bucket starts, day columns, dimension
 * conditions), rows into series, and the shape of a daily batch-only view.
 */
import type { DuckDBValue } from '@duckdb/node-api';
import type { Redis } from 'ioredis';
import type { Config } from '../../common/config';
import { BUCKET_MS, type Granularity } from '../../common/contract';
import { covered } from '../../common/speed-keys';
import type { Row } from '../batch-store';
import type { LayerQuery, LayerRows, MetricDef, SeriesKey } from '../merge';

export interface BatchSource {
  has(table: string): boolean;
  query(sql: string, params?: DuckDBValue[]): Promise<Row[]>;
}

export interface Sources {
  cfg: Config;
  batch: BatchSource;
  redis: Redis;
}

export const EVENT_DIMENSIONS = ['event_type', 'device_type', 'country', 'app_version'] as const;
export type EventDimension = (typeof EVENT_DIMENSIONS)[number];

export const OBT_DIMENSIONS = ['device_type', 'app_version', 'country'] as const;
export type ObtDimension = (typeof OBT_DIMENSIONS)[number];

/**
 * Conditions on the roll-up tables' dimension columns: a filtered dimension matches its value, a
 * grouped one every real value (not its ALL row), any other only its ALL row. Appends to `where`/`params`.
 * Column names come from a fixed list; values are always bound parameters.
 */
export function dimensionConditions(
  dims: readonly string[],
  q: { filters: Partial<Record<string, string>>; groupBy: readonly string[] },
  where: string[],
  params: DuckDBValue[],
): void {
  for (const d of dims) {
    const f = q.filters[d];
    if (f !== undefined) {
      params.push(f);
      where.push(`${d} = $${params.length}`);
    } else where.push(q.groupBy.includes(d) ? `${d} <> 'ALL'` : `${d} = 'ALL'`);
  }
}

export const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
export const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Rows (with a `bucket` column and the key columns) into per-series maps. */
export function toSeries<V>(rows: Row[], keyCols: readonly string[], valueOf: (r: Row) => V): LayerRows<V> {
  const out = new Map<string, { key: SeriesKey; values: Map<number, V> }>();
  for (const r of rows) {
    const key: SeriesKey = {};
    for (const k of keyCols) key[k] = String(r[k]);
    const id = JSON.stringify(key);
    let s = out.get(id);
    if (!s) out.set(id, (s = { key, values: new Map() }));
    s.values.set(Number(r.bucket), valueOf(r));
  }
  return [...out.values()];
}

/** Bucket-start expression for a column of epoch ms. */
export const bucketExpr = (col: string, g: Granularity) => `(${col} // ${BUCKET_MS[g]}) * ${BUCKET_MS[g]}`;
/** Epoch ms of a DATE column (a day bucket's start). */
export const dayMsExpr = (col: string) => `CAST(epoch_ms(CAST(${col} AS TIMESTAMP)) AS BIGINT)`;

/** Sub-buckets of the speed layer's finest family that make up a bucket. */
export function minutesOf(bucket: number, g: Granularity): number[] {
  const n = Math.max(1, BUCKET_MS[g] / BUCKET_MS.minute);
  return Array.from({ length: n }, (_, i) => bucket + i * BUCKET_MS.minute);
}

/** The speed layer still holds a bucket while its oldest sub-bucket (which expires first) has not expired. */
export function speedCovers(cfg: Config, finest: 'minute' | 'hour') {
  return (bucket: number, g: Granularity, now: number) => covered(cfg, g === 'second' ? 'second' : finest, bucket, now);
}

/** A view published by the daily run only: the speed layer has no equivalent, so days after W are not covered. */
export function dailyView<P, V>(
  src: Sources,
  name: string,
  table: string,
  zero: (key: SeriesKey) => V,
  read: (q: LayerQuery<P> & { boundary: number }) => Promise<LayerRows<V>>,
): MetricDef<P, V> {
  return {
    name,
    granularities: ['day'],
    zero,
    batch: {
      granularities: ['day'],
      period: () => 'daily',
      read: async (q) => (src.batch.has(table) ? read(q) : []),
    },
  };
}
