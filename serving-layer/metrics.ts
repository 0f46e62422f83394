/**
 * The metrics the API serves, each declared once: what the batch views and
 * the speed layer can answer, and the value of an empty covered bucket. The
 * time boundary between the two is not here: it is `merge` (merge.ts).
 * The SQL reads like METRICS.md; dimension column names come from a fixed
 * list, values are always bound parameters.
 */
import type { DuckDBValue } from '@duckdb/node-api';
import type { Redis } from 'ioredis';
import type { Config } from '../common/config';
import { ALL, BUCKET_MS, bucketStart, dayOf, type Granularity } from '../common/contract';
import { HLL_STANDARD_ERROR, covered, hllErrorBound, readBinge, speedKeys } from '../common/speed-keys';
import type { Row } from './batch-store';
import type { LayerQuery, LayerRows, MetricDef, SeriesKey } from './merge';

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
/** The speed layer's count fields are event_type|device_type|country (no app_version). */
const SPEED_DIMENSIONS = ['event_type', 'device_type', 'country'] as const;

export const OBT_DIMENSIONS = ['device_type', 'app_version', 'country'] as const;

/**
 * Conditions on the roll-up tables' dimension columns: a filtered dimension matches its value, a
 * grouped one every real value (not its ALL row), any other only its ALL row. Appends to `where`/`params`.
 */
function dimensionConditions(
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
export type ObtDimension = (typeof OBT_DIMENSIONS)[number];
/** The grouping sets of the one big table (METRICS.md), as the set of dimensions that are not ALL. */
const OBT_LEVELS = [['device_type', 'app_version', 'country'], ['device_type', 'country'], ['device_type'], ['country'], []].map((l) => l.sort().join(','));

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Rows (with a `bucket` column and the key columns) into per-series maps. */
function toSeries<V>(rows: Row[], keyCols: readonly string[], valueOf: (r: Row) => V): LayerRows<V> {
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
const bucketExpr = (col: string, g: Granularity) => `(${col} // ${BUCKET_MS[g]}) * ${BUCKET_MS[g]}`;
const dayMsExpr = (col: string) => `CAST(epoch_ms(CAST(${col} AS TIMESTAMP)) AS BIGINT)`;

/** Sub-buckets of the speed layer's finest family that make up a bucket. */
function minutesOf(bucket: number, g: Granularity): number[] {
  const n = Math.max(1, BUCKET_MS[g] / BUCKET_MS.minute);
  return Array.from({ length: n }, (_, i) => bucket + i * BUCKET_MS.minute);
}

async function pipelined<T>(redis: Redis, build: (p: ReturnType<Redis['pipeline']>) => void): Promise<T[]> {
  const p = redis.pipeline();
  build(p);
  const res = (await p.exec()) ?? [];
  return res.map(([err, v]) => {
    if (err) throw err;
    return v as T;
  });
}

/** The speed layer still holds a bucket while its oldest sub-bucket (which expires first) has not expired. */
function speedCovers(cfg: Config, finest: 'minute' | 'hour') {
  return (bucket: number, g: Granularity, now: number) => covered(cfg, g === 'second' ? 'second' : finest, bucket, now);
}

// ───────────────────────────── events ─────────────────────────────

export interface EventsParams {
  groupBy: EventDimension[];
  filters: Partial<Record<EventDimension, string>>;
}

export function eventsMetric(src: Sources): MetricDef<EventsParams, number> {
  const { cfg } = src;
  return {
    name: 'events',
    granularities: ['second', 'minute', 'hour', 'day'],
    zero: () => 0,
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_events')) return [];
        const where: string[] = ['hour_start_ms >= $1', 'hour_start_ms < $2'];
        const params: DuckDBValue[] = [q.from, q.to];
        dimensionConditions(EVENT_DIMENSIONS, q.params, where, params);
        const keys = q.params.groupBy;
        const rows = await src.batch.query(
          `SELECT ${bucketExpr('hour_start_ms', q.granularity)} AS bucket${keys.map((k) => `, ${k}`).join('')}, CAST(sum(events) AS BIGINT) AS events
           FROM hourly_events WHERE ${where.join(' AND ')} GROUP BY ALL`,
          params,
        );
        return toSeries(rows, keys, (r) => num(r.events));
      },
    },
    speed: {
      granularities: ['second', 'minute', 'hour', 'day'],
      supports: (p) => !p.groupBy.includes('app_version') && p.filters.app_version === undefined,
      covers: speedCovers(cfg, 'minute'),
      async read(q) {
        const unit = q.granularity === 'second' ? 'second' : 'minute';
        const keys = speedKeys(cfg);
        const subs = q.buckets.flatMap((b) => (unit === 'second' ? [b] : minutesOf(b, q.granularity)));
        const grouped = q.params.groupBy.length > 0;
        const want = (dim: (typeof SPEED_DIMENSIONS)[number], value: string): boolean => {
          const f = q.params.filters[dim];
          if (f !== undefined) return value === f;
          return q.params.groupBy.includes(dim) ? value !== ALL : value === ALL;
        };
        const values = new Map<string, { key: SeriesKey; values: Map<number, number> }>();
        const add = (key: SeriesKey, bucket: number, n: number) => {
          const id = JSON.stringify(key);
          let s = values.get(id);
          if (!s) values.set(id, (s = { key, values: new Map() }));
          s.values.set(bucket, (s.values.get(bucket) ?? 0) + n);
        };
        if (!grouped) {
          const field = SPEED_DIMENSIONS.map((d) => q.params.filters[d] ?? ALL).join('|');
          const res = await pipelined<string | null>(src.redis, (p) => subs.forEach((b) => p.hget(keys.counts(unit, b), field)));
          subs.forEach((b, i) => add({}, bucketStart(b, q.granularity), Number(res[i] ?? 0)));
        } else {
          const res = await pipelined<Record<string, string>>(src.redis, (p) => subs.forEach((b) => p.hgetall(keys.counts(unit, b))));
          subs.forEach((b, i) => {
            for (const [field, n] of Object.entries(res[i])) {
              const parts = field.split('|');
              // device_type may contain '|': event_type is the first part and country the last.
              const dims = { event_type: parts[0], device_type: parts.slice(1, -1).join('|'), country: parts[parts.length - 1] };
              if (!SPEED_DIMENSIONS.every((d) => want(d, dims[d]))) continue;
              const key: SeriesKey = {};
              for (const d of q.params.groupBy) key[d] = dims[d as (typeof SPEED_DIMENSIONS)[number]];
              add(key, bucketStart(b, q.granularity), Number(n));
            }
          });
        }
        return [...values.values()];
      },
    },
  };
}

// ───────────────────────────── active users ─────────────────────────────

export interface UsersParams {
  deviceType: string;
}

export function activeUsersMetric(src: Sources): MetricDef<UsersParams, number> {
  const { cfg } = src;
  return {
    name: 'active_users',
    granularities: ['minute', 'hour', 'day'],
    zero: () => 0,
    estimateOf: (v) => v,
    batch: {
      granularities: ['hour', 'day'],
      // DAU is a distinct count over the day: it comes from the daily one big table, not a sum of hours.
      period: (g) => (g === 'day' ? 'daily' : 'hourly'),
      async read(q) {
        if (q.granularity === 'hour') {
          if (!src.batch.has('hourly_users')) return [];
          const rows = await src.batch.query(
            `SELECT hour_start_ms AS bucket, users FROM hourly_users WHERE hour_start_ms >= $1 AND hour_start_ms < $2 AND device_type = $3`,
            [q.from, q.to, q.params.deviceType],
          );
          return toSeries(rows, [], (r) => num(r.users));
        }
        if (!src.batch.has('daily_aggregates_with_dimensions')) return [];
        const rows = await src.batch.query(
          `SELECT ${dayMsExpr('day')} AS bucket, unique_users FROM daily_aggregates_with_dimensions
           WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2 AND device_type = $3 AND app_version = 'ALL' AND country = 'ALL'`,
          [q.from, q.to, q.params.deviceType],
        );
        return toSeries(rows, [], (r) => num(r.unique_users));
      },
    },
    speed: {
      granularities: ['minute', 'hour', 'day'],
      relativeStdError: HLL_STANDARD_ERROR,
      errorOf: hllErrorBound,
      covers: (b, g, now) => covered(cfg, g, b, now),
      async read(q) {
        // Per-bucket PFCOUNTs only: readActiveUsers' range-wide union is not part of a bucketed answer.
        const keys = speedKeys(cfg);
        const device = q.params.deviceType;
        const res = await pipelined<number>(src.redis, (p) => q.buckets.forEach((b) => p.pfcount(keys.hll(q.granularity as 'minute' | 'hour' | 'day', b, device))));
        return [{ key: {}, values: new Map(q.buckets.map((b, i) => [b, Number(res[i])])) }];
      },
    },
  };
}

// ───────────────────────────── playback ─────────────────────────────

export interface PlaybackValue {
  plays: number;
  pauses: number;
  completes: number;
  rebuffers: number;
  /** pauses / plays; null when plays = 0. */
  pause_rate: number | null;
  completion_rate: number | null;
}

function playbackValue(plays: number, pauses: number, completes: number, rebuffers: number): PlaybackValue {
  return {
    plays,
    pauses,
    completes,
    rebuffers,
    pause_rate: plays === 0 ? null : pauses / plays,
    completion_rate: plays === 0 ? null : completes / plays,
  };
}

export function playbackMetric(src: Sources): MetricDef<Record<string, never>, PlaybackValue> {
  const { cfg } = src;
  return {
    name: 'playback',
    granularities: ['minute', 'hour', 'day'],
    zero: () => playbackValue(0, 0, 0, 0),
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_playback')) return [];
        const rows = await src.batch.query(
          `SELECT ${bucketExpr('hour_start_ms', q.granularity)} AS bucket,
                  CAST(sum(plays) AS BIGINT) AS plays, CAST(sum(pauses) AS BIGINT) AS pauses,
                  CAST(sum(completes) AS BIGINT) AS completes, CAST(sum(rebuffers) AS BIGINT) AS rebuffers
           FROM hourly_playback WHERE content_id = 'ALL' AND hour_start_ms >= $1 AND hour_start_ms < $2 GROUP BY ALL`,
          [q.from, q.to],
        );
        return toSeries(rows, [], (r) => playbackValue(num(r.plays), num(r.pauses), num(r.completes), num(r.rebuffers)));
      },
    },
    speed: {
      granularities: ['minute', 'hour', 'day'],
      covers: speedCovers(cfg, 'minute'),
      async read(q) {
        const keys = speedKeys(cfg);
        const subs = q.buckets.flatMap((b) => minutesOf(b, q.granularity));
        const res = await pipelined<Array<string | null>>(src.redis, (p) => subs.forEach((m) => p.hmget(keys.playback(m), 'plays', 'pauses', 'completes', 'rebuffers')));
        const sums = new Map<number, number[]>();
        subs.forEach((m, i) => {
          const b = bucketStart(m, q.granularity);
          const acc = sums.get(b) ?? [0, 0, 0, 0];
          res[i].forEach((v, j) => (acc[j] += Number(v ?? 0)));
          sums.set(b, acc);
        });
        return [{ key: {}, values: new Map([...sums].map(([b, [a, c, d, e]]) => [b, playbackValue(a, c, d, e)])) }];
      },
    },
  };
}

// ───────────────────────────── top content ─────────────────────────────

export interface TopContentValue {
  items: Array<{ content_id: string; plays: number }>;
}

export function topContentMetric(src: Sources): MetricDef<{ limit: number }, TopContentValue> {
  const { cfg } = src;
  const rank = (m: Map<string, number>, limit: number) =>
    [...m]
      .filter(([, plays]) => plays > 0)
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, limit)
      .map(([content_id, plays]) => ({ content_id, plays }));
  return {
    name: 'top_content',
    granularities: ['hour', 'day'],
    zero: () => ({ items: [] }),
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_playback')) return [];
        const rows = await src.batch.query(
          `WITH per_bucket AS (
             SELECT ${bucketExpr('hour_start_ms', q.granularity)} AS bucket, content_id, CAST(sum(plays) AS BIGINT) AS plays
             FROM hourly_playback
             WHERE content_id IS NOT NULL AND content_id <> 'ALL' AND hour_start_ms >= $1 AND hour_start_ms < $2
             GROUP BY ALL HAVING sum(plays) > 0)
           SELECT * FROM per_bucket
           QUALIFY row_number() OVER (PARTITION BY bucket ORDER BY plays DESC, content_id) <= $3
           ORDER BY bucket, plays DESC, content_id`,
          [q.from, q.to, q.params.limit],
        );
        const out = new Map<number, TopContentValue>();
        for (const r of rows) {
          const b = Number(r.bucket);
          const v = out.get(b) ?? { items: [] };
          v.items.push({ content_id: String(r.content_id), plays: num(r.plays) });
          out.set(b, v);
        }
        return [{ key: {}, values: out }];
      },
    },
    speed: {
      granularities: ['hour', 'day'],
      covers: speedCovers(cfg, 'hour'),
      async read(q) {
        const keys = speedKeys(cfg);
        const hours = q.buckets.flatMap((b) => Array.from({ length: BUCKET_MS[q.granularity] / BUCKET_MS.hour }, (_, i) => b + i * BUCKET_MS.hour));
        // Whole sets, not the top N of each hour: a day's ranking must sum complete hours.
        const res = await pipelined<string[]>(src.redis, (p) => hours.forEach((h) => p.zrangebyscore(keys.topContent(h), '-inf', '+inf', 'WITHSCORES')));
        const sums = new Map<number, Map<string, number>>();
        hours.forEach((h, i) => {
          const b = bucketStart(h, q.granularity);
          const m = sums.get(b) ?? new Map<string, number>();
          for (let j = 0; j < res[i].length; j += 2) m.set(res[i][j], (m.get(res[i][j]) ?? 0) + Number(res[i][j + 1]));
          sums.set(b, m);
        });
        return [{ key: {}, values: new Map([...sums].map(([b, m]) => [b, { items: rank(m, q.params.limit) }])) }];
      },
    },
  };
}

// ───────────────────────────── daily batch-only views ─────────────────────────────

/** A view published by the daily run only: the speed layer has no equivalent, so days after W are not covered. */
function dailyView<P, V>(
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

export interface SessionsValue {
  sessions: number;
  avg_duration_ms: number | null;
  median_duration_ms: number | null;
  bounce_rate: number | null;
  avg_events_per_session: number | null;
}

export function dailySessionsMetric(src: Sources): MetricDef<{ deviceType: string; groupByDevice: boolean }, SessionsValue> {
  return dailyView(
    src,
    'daily_sessions',
    'daily_sessions',
    () => ({ sessions: 0, avg_duration_ms: null, median_duration_ms: null, bounce_rate: null, avg_events_per_session: null }),
    async (q) => {
      const rows = await src.batch.query(
        `SELECT ${dayMsExpr('day')} AS bucket, device_type, sessions, avg_duration_ms, median_duration_ms, bounce_rate, avg_events_per_session
         FROM daily_sessions WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2 AND ${q.params.groupByDevice ? "device_type <> 'ALL'" : 'device_type = $3'}`,
        q.params.groupByDevice ? [q.from, q.to] : [q.from, q.to, q.params.deviceType],
      );
      return toSeries(rows, q.params.groupByDevice ? ['device_type'] : [], (r) => ({
        sessions: num(r.sessions),
        avg_duration_ms: numOrNull(r.avg_duration_ms),
        median_duration_ms: numOrNull(r.median_duration_ms),
        bounce_rate: numOrNull(r.bounce_rate),
        avg_events_per_session: numOrNull(r.avg_events_per_session),
      }));
    },
  );
}

export interface RetentionValue {
  /** The as-of day A of the cohort figures: the latest published day before the watermark. */
  as_of_day: string | null;
  cohort_size: number;
  retained_d1: number | null;
  retained_d7: number | null;
  retained_d14: number | null;
  retained_d28: number | null;
  churned: number;
}

/** Buckets are cohort days C; the figures are as of the latest day before the daily watermark. */
export function retentionMetric(src: Sources): MetricDef<Record<string, never>, RetentionValue> {
  return dailyView<Record<string, never>, RetentionValue>(
    src,
    'retention',
    'retention_cohorts',
    () => ({ as_of_day: null, cohort_size: 0, retained_d1: null, retained_d7: null, retained_d14: null, retained_d28: null, churned: 0 }),
    async (q) => {
      const rows = await src.batch.query(
        `WITH latest AS (SELECT max(as_of_day) AS a FROM retention_cohorts WHERE ${dayMsExpr('as_of_day')} < $3)
         SELECT ${dayMsExpr('cohort_day')} AS bucket, CAST(as_of_day AS VARCHAR) AS as_of_day, cohort_size, retained_d1, retained_d7, retained_d14, retained_d28, churned
         FROM retention_cohorts, latest
         WHERE as_of_day = latest.a AND ${dayMsExpr('cohort_day')} >= $1 AND ${dayMsExpr('cohort_day')} < $2`,
        [q.from, q.to, q.boundary],
      );
      return toSeries(rows, [], (r) => ({
        as_of_day: String(r.as_of_day),
        cohort_size: num(r.cohort_size),
        retained_d1: numOrNull(r.retained_d1),
        retained_d7: numOrNull(r.retained_d7),
        retained_d14: numOrNull(r.retained_d14),
        retained_d28: numOrNull(r.retained_d28),
        churned: num(r.churned),
      }));
    },
  );
}

export const CLICK_BINS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10+'] as const;
export interface ClicksToPlayValue {
  play_sessions: number;
  no_play_sessions: number;
  avg_clicks_to_play: number | null;
  histogram: Array<{ clicks: string; sessions: number }>;
}

export function clicksToPlayMetric(src: Sources): MetricDef<Record<string, never>, ClicksToPlayValue> {
  return dailyView(
    src,
    'clicks_to_play',
    'clicks_to_play',
    () => ({ play_sessions: 0, no_play_sessions: 0, avg_clicks_to_play: null, histogram: CLICK_BINS.map((clicks) => ({ clicks, sessions: 0 })) }),
    async (q) => {
      const rows = await src.batch.query(`SELECT ${dayMsExpr('day')} AS bucket, * EXCLUDE (day) FROM clicks_to_play WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2`, [q.from, q.to]);
      return toSeries(rows, [], (r) => ({
        play_sessions: num(r.play_sessions),
        no_play_sessions: num(r.no_play_sessions),
        avg_clicks_to_play: numOrNull(r.avg_clicks_to_play),
        histogram: CLICK_BINS.map((clicks) => ({ clicks, sessions: num(r[clicks === '10+' ? 'clicks_10_plus' : `clicks_${clicks}`]) })),
      }));
    },
  );
}

export interface TopPathsValue {
  paths: Array<{ rank: number; path: string; sessions: number }>;
}

export function topPathsMetric(src: Sources): MetricDef<{ limit: number }, TopPathsValue> {
  return dailyView(
    src,
    'top_paths',
    'top_paths',
    () => ({ paths: [] }),
    async (q) => {
      const rows = await src.batch.query(
        `SELECT ${dayMsExpr('day')} AS bucket, rank, path, sessions FROM top_paths WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2 AND rank <= $3 ORDER BY bucket, rank`,
        [q.from, q.to, q.params.limit],
      );
      const out = new Map<number, TopPathsValue>();
      for (const r of rows) {
        const b = Number(r.bucket);
        const v = out.get(b) ?? { paths: [] };
        v.paths.push({ rank: num(r.rank), path: String(r.path), sessions: num(r.sessions) });
        out.set(b, v);
      }
      return [{ key: {}, values: out }];
    },
  );
}

export interface BingeValue {
  count: number;
  /** Up to `limit` users, ascending. */
  users: string[];
}

export function bingeMetric(src: Sources): MetricDef<{ limit: number }, BingeValue> {
  const { cfg } = src;
  return {
    name: 'binge_users',
    granularities: ['day'],
    zero: () => ({ count: 0, users: [] }),
    batch: {
      granularities: ['day'],
      period: () => 'daily',
      async read(q) {
        if (!src.batch.has('binge_users')) return [];
        const rows = await src.batch.query(
          `SELECT ${dayMsExpr('day')} AS bucket, count(*) OVER (PARTITION BY day) AS n, user_id FROM binge_users
           WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2 ORDER BY bucket, user_id`,
          [q.from, q.to],
        );
        const out = new Map<number, BingeValue>();
        for (const r of rows) {
          const b = Number(r.bucket);
          const v = out.get(b) ?? { count: num(r.n), users: [] };
          if (v.users.length < q.params.limit) v.users.push(String(r.user_id));
          out.set(b, v);
        }
        return [{ key: {}, values: out }];
      },
    },
    speed: {
      granularities: ['day'],
      covers: (b, _g, now) => covered(cfg, 'day', b, now),
      async read(q) {
        const days = await Promise.all(q.buckets.map((b) => readBinge(src.redis, cfg, dayOf(b))));
        return [{ key: {}, values: new Map(days.map((d, i) => [q.buckets[i], { count: d.count, users: d.users.slice(0, q.params.limit) }])) }];
      },
    },
  };
}

export interface ObtParams {
  groupBy: ObtDimension[];
  filters: Partial<Record<ObtDimension, string>>;
}

export interface ObtValue {
  total_events: number;
  total_installs: number;
  total_views: number;
  total_plays: number;
  total_sessions: number;
  unique_users: number;
}

/** The dimensions a query pins to a value or groups by must form one of the table's grouping sets; null when they do. */
export function obtLevelError(p: ObtParams): string | null {
  const specific = OBT_DIMENSIONS.filter((d) => p.groupBy.includes(d) || (p.filters[d] !== undefined && p.filters[d] !== ALL));
  if (OBT_LEVELS.includes([...specific].sort().join(','))) return null;
  return `the one big table has no roll-up by (${specific.join(', ')}); its levels are (device_type, app_version, country), (device_type, country), (device_type), (country) and the day total`;
}

export function obtMetric(src: Sources): MetricDef<ObtParams, ObtValue> {
  return dailyView(
    src,
    'obt',
    'daily_aggregates_with_dimensions',
    () => ({ total_events: 0, total_installs: 0, total_views: 0, total_plays: 0, total_sessions: 0, unique_users: 0 }),
    async (q) => {
      const where = [`${dayMsExpr('day')} >= $1`, `${dayMsExpr('day')} < $2`];
      const params: DuckDBValue[] = [q.from, q.to];
      dimensionConditions(OBT_DIMENSIONS, q.params, where, params);
      const rows = await src.batch.query(
        `SELECT ${dayMsExpr('day')} AS bucket, device_type, app_version, country, total_events, total_installs, total_views, total_plays, total_sessions, unique_users
         FROM daily_aggregates_with_dimensions WHERE ${where.join(' AND ')}`,
        params,
      );
      return toSeries(rows, q.params.groupBy, (r) => ({
        total_events: num(r.total_events),
        total_installs: num(r.total_installs),
        total_views: num(r.total_views),
        total_plays: num(r.total_plays),
        total_sessions: num(r.total_sessions),
        unique_users: num(r.unique_users),
      }));
    },
  );
}
