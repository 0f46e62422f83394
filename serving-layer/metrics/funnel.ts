/**
 * funnel: per day, the users entering step 1 of an ordered funnel and reaching each later step
 * within the window (METRICS.md "Funnels"), with conversions and median times between steps, by
 * device_type and country. A declared funnel (FUNNELS) reads its precomputed user_funnels rows; any
 * other runs batch-layer/sql/user_funnels.sql over the published days' processed/events
 * (funnel-events.ts). Batch only: a funnel needs each user's events in order, which the speed layer
 * does not keep. A declared funnel's day is exact only where funnel_days says the day was computed
 * with its current steps and window (`funnelComputedDays`); any other published day is not covered.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { DuckDBValue } from '@duckdb/node-api';
import { REPO_ROOT, type FunnelDef, type FunnelStep } from '../../common/config';
import type { Row } from '../batch-store';
import type { MetricDef, SeriesKey } from '../merge';
import { dayMsExpr, num, numOrNull, toSeries, type Sources } from './shared';

export const FUNNEL_DIMENSIONS = ['device_type', 'country'] as const;
export type FunnelDimension = (typeof FUNNEL_DIMENSIONS)[number];
/** Ad-hoc funnels read every event of the range: at most this many days per query. */
export const FUNNEL_ADHOC_MAX_DAYS = 31;
export const FUNNEL_NOT_COMPUTED_REASON =
  'published before this funnel was declared in FUNNELS, or with other steps or another window: not computed for these days (a daily backfill of them computes it)';
export const FUNNEL_SPEED_REASON = "a funnel follows each user's events in order; the speed layer keeps counts, not sequences, so days after the batch watermark are not covered";

export interface FunnelStepValue {
  /** Users whose best attempt reached this step. */
  users: number;
  /** users / the previous step's users (null for step 1, or when the previous step has none). */
  conversion: number | null;
  /** Median ms from the previous step to this one over those users (null for step 1, or with none). */
  median_ms: number | null;
}

export interface FunnelValue {
  /** Users entering step 1. */
  entered: number;
  steps: FunnelStepValue[];
  /** The last step's users / entered (null when none entered). */
  conversion: number | null;
}

export interface FunnelParams {
  steps: FunnelStep[];
  windowMs: number;
  /** The declared funnel with exactly these steps and window, or null (ad-hoc). */
  declared: string | null;
  filters: Partial<Record<FunnelDimension, string>>;
  groupBy: FunnelDimension[];
}

/** Where an ad-hoc funnel finds the published days' processed/events, staged as local Parquet files. */
export interface FunnelEvents {
  withDays<T>(days: readonly string[], fn: (files: string[]) => Promise<T>): Promise<T>;
}

/** The declared funnel these steps and window are, if any. */
export function declaredFunnel(funnels: readonly FunnelDef[], steps: readonly FunnelStep[], windowMs: number): string | null {
  const same = (a: FunnelStep, b: FunnelStep) => a.event_type === b.event_type && a.property === b.property && a.value === b.value;
  return funnels.find((f) => f.window_ms === windowMs && f.steps.length === steps.length && f.steps.every((s, i) => same(s, steps[i])))?.name ?? null;
}

/** One step as the API and FUNNELS spell it. */
export const funnelStepText = (s: FunnelStep): string => (s.property === null ? s.event_type : `${s.event_type}:${s.property}=${s.value}`);

/** A definition as funnel_days.sql records it: the steps as the API spells them, comma-separated. */
export function funnelStepsText(steps: readonly FunnelStep[]): string {
  return steps.map(funnelStepText).join(',');
}

/** Day starts (epoch ms) in [from, to) whose daily run computed this declared funnel with these steps and window. */
export async function funnelComputedDays(src: Sources, name: string, steps: readonly FunnelStep[], windowMs: number, from: number, to: number): Promise<Set<number>> {
  if (!src.batch.has('funnel_days')) return new Set();
  const rows = await src.batch.query(
    `SELECT ${dayMsExpr('day')} AS day FROM funnel_days WHERE funnel = $1 AND steps = $2 AND window_ms = $3 AND ${dayMsExpr('day')} >= $4 AND ${dayMsExpr('day')} < $5`,
    [name, funnelStepsText(steps), windowMs, from, to],
  );
  return new Set(rows.map((r) => num(r.day)));
}

let userFunnelsSql: string | undefined;
/** The batch layer's definition, run as it is over an ad-hoc funnel's steps. */
function userFunnels(): string {
  userFunnelsSql ??= fs.readFileSync(path.join(REPO_ROOT, 'batch-layer/sql/user_funnels.sql'), 'utf8').trim().replace(/;\s*$/, '');
  return userFunnelsSql;
}

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

/**
 * Per day (and group): entrants, users per step, median ms between consecutive steps, over the
 * user_funnels rows of `source`. Step columns come from the step count; values are bound ($1, $2 the range).
 */
function aggregateSql(n: number, source: string, params: FunnelParams, bound: DuckDBValue[]): string {
  const where = [`${dayMsExpr('day')} >= $1`, `${dayMsExpr('day')} < $2`];
  for (const d of FUNNEL_DIMENSIONS) {
    const v = params.filters[d];
    if (v === undefined) continue;
    bound.push(v);
    where.push(`${d} = $${bound.length}`);
  }
  const cols = Array.from({ length: n }, (_, i) =>
    i === 0
      ? `count(*) AS users_1`
      : `count(*) FILTER (WHERE steps_reached >= ${i + 1}) AS users_${i + 1}, median(step_ts[${i + 1}] - step_ts[${i}]) FILTER (WHERE steps_reached >= ${i + 1}) AS median_${i + 1}`,
  );
  const groups = params.groupBy.map((d) => `, ${d}`).join('');
  return `
    SELECT ${dayMsExpr('day')} AS bucket${groups}, ${cols.join(', ')}
    FROM ${source}
    WHERE ${where.join(' AND ')}
    GROUP BY ALL
    ORDER BY ALL`;
}

function valueOf(n: number, r: Row): FunnelValue {
  const steps: FunnelStepValue[] = [];
  for (let i = 1; i <= n; i++) {
    const users = num(r[`users_${i}`]);
    const prev = steps.at(-1)?.users ?? 0;
    steps.push({ users, conversion: i === 1 || prev === 0 ? null : users / prev, median_ms: i === 1 ? null : numOrNull(r[`median_${i}`]) });
  }
  const entered = steps[0].users;
  return { entered, steps, conversion: entered === 0 ? null : steps[n - 1].users / entered };
}

export function funnelZero(n: number): FunnelValue {
  return { entered: 0, steps: Array.from({ length: n }, () => ({ users: 0, conversion: null, median_ms: null })), conversion: null };
}

export function funnelMetric(src: Sources, events: FunnelEvents, n: number): MetricDef<FunnelParams, FunnelValue> {
  return {
    name: 'funnel',
    granularities: ['day'],
    zero: (_key: SeriesKey) => funnelZero(n),
    batch: {
      granularities: ['day'],
      period: () => 'daily',
      read: async (q) => {
        const p = q.params;
        const bound: DuckDBValue[] = [q.from, q.to];
        if (p.declared !== null) {
          if (!src.batch.has('user_funnels')) return [];
          // The buckets asked for are the days funnel_days says were computed with this definition
          // (funnelComputedDays, through the route's watermark view): only those, so another
          // definition's rows under the same name never reach a value or a series key.
          bound.push(p.declared);
          const name = bound.length;
          const days = q.buckets.map((b) => `$${bound.push(b)}`);
          const source = `(SELECT * FROM user_funnels WHERE funnel = $${name} AND ${dayMsExpr('day')} IN (${days.join(', ')}))`;
          const rows = await src.batch.query(aggregateSql(n, source, p, bound), bound);
          return toSeries(rows, p.groupBy, (r) => valueOf(n, r));
        }
        const days = q.buckets.map((b) => new Date(b).toISOString().slice(0, 10));
        return events.withDays(days, async (files) => {
          if (files.length === 0) return [];
          const steps = p.steps.map((s, i) => {
            bound.push(i + 1, s.event_type, s.property, s.value);
            const k = bound.length;
            return `($${k - 3}::INTEGER, $${k - 2}::VARCHAR, $${k - 1}::VARCHAR, $${k}::VARCHAR)`;
          });
          bound.push(p.windowMs);
          const source = `(
            WITH day_events AS (
              SELECT event_id, event_type, user_id, ts, device_type, country, content_id, page
              FROM read_parquet([${files.map(sqlString).join(', ')}], hive_partitioning = false)
            ),
            funnel_steps AS (
              SELECT '' AS funnel, step, event_type, property, value, $${bound.length}::BIGINT AS window_ms
              FROM (VALUES ${steps.join(', ')}) s(step, event_type, property, value)
            )
            SELECT * FROM (${userFunnels()})
          )`;
          const rows = await src.batch.query(aggregateSql(n, source, p, bound), bound);
          return toSeries(rows, p.groupBy, (r) => valueOf(n, r));
        });
      },
    },
  };
}
