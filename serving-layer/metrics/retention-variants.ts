/**
 * retention by mode and period (METRICS.md "Retention variants"): first_seen by day is the
 * retention_cohorts view (retention.ts, the default); the other modes and weekly cohorts
 * (bucket = the cohort week's Monday, its value given to each of its days for weekBuckets to
 * fold) come from retention_variants. Figures as of the latest
 * published day before the daily watermark. Batch only.
 */
import type { MetricDef } from '../merge';
import { retentionMetric, type RetentionValue } from './retention';
import { dailyView, dayMsExpr, num, type Sources } from './shared';
import { eachDayOfWeek, weekStartOf } from './weeks';

export const RETENTION_MODES = ['first_seen', 'recurring', 'unbounded'] as const;
export type RetentionMode = (typeof RETENTION_MODES)[number];
export const RETENTION_PERIODS = ['day', 'week'] as const;
export type RetentionPeriod = (typeof RETENTION_PERIODS)[number];

/** K of a day cohort (retained_dK) and of a week cohort (retained_wK). */
export const RETENTION_DAYS = [1, 7, 14, 28] as const;
export const RETENTION_WEEKS = [1, 2, 3, 4, 5, 6, 7, 8] as const;

export interface RetentionParams {
  mode: RetentionMode;
  period: RetentionPeriod;
}

/** By day: retained_d1 … retained_d28. By week: retained_w1 … retained_w8 instead. */
export type RetentionModeValue = RetentionValue & Partial<Record<`retained_w${(typeof RETENTION_WEEKS)[number]}`, number | null>>;

/** The cohorts of [$1, $2) of mode $3 and period $4, as of the latest as-of day before $5 (the boundary). */
const variantsSql = `
  WITH latest AS (SELECT max(as_of_day) AS a FROM retention_variants WHERE ${dayMsExpr('as_of_day')} < $5)
  SELECT ${dayMsExpr('cohort_start')} AS bucket, CAST(as_of_day AS VARCHAR) AS as_of_day, k, cohort_size, retained, churned
  FROM retention_variants, latest
  WHERE as_of_day = latest.a AND mode = $3 AND period = $4
    AND ${dayMsExpr('cohort_start')} >= $1 AND ${dayMsExpr('cohort_start')} < $2`;

function zeroOf(period: RetentionPeriod): RetentionModeValue {
  const v: RetentionModeValue = { as_of_day: null, cohort_size: 0, retained_d1: null, retained_d7: null, retained_d14: null, retained_d28: null, churned: 0 };
  if (period === 'week') {
    for (const k of RETENTION_DAYS) v[`retained_d${k}`] = null;
    for (const k of RETENTION_WEEKS) v[`retained_w${k}`] = null;
  }
  return v;
}

function variantsMetric(src: Sources): MetricDef<RetentionParams, RetentionModeValue> {
  return dailyView<RetentionParams, RetentionModeValue>(
    src,
    'retention',
    'retention_variants',
    () => zeroOf('day'),
    async (q) => {
      const week = q.params.period === 'week';
      const rows = await src.batch.query(variantsSql, [week ? weekStartOf(q.from) : q.from, q.to, q.params.mode, q.params.period, q.boundary]);
      const values = new Map<number, RetentionModeValue>();
      const prefix = q.params.period === 'day' ? 'retained_d' : 'retained_w';
      for (const r of rows) {
        const b = Number(r.bucket);
        let v = values.get(b);
        if (!v) values.set(b, (v = { ...zeroOf(q.params.period), as_of_day: String(r.as_of_day), cohort_size: num(r.cohort_size), churned: num(r.churned) }));
        (v as unknown as Record<string, number | null>)[`${prefix}${num(r.k)}`] = r.retained === null || r.retained === undefined ? null : Number(r.retained);
      }
      if (week) for (const [b, v] of [...values]) eachDayOfWeek(values, b, v);
      return [{ key: {}, values }];
    },
  );
}

/** The retention route's metric: the parameters pick the view. */
export function retentionByModeMetric(src: Sources): MetricDef<RetentionParams, RetentionModeValue> {
  const firstSeen = retentionMetric(src);
  const variants = variantsMetric(src);
  return {
    name: firstSeen.name,
    granularities: firstSeen.granularities,
    zero: () => zeroOf('day'),
    batch: {
      granularities: firstSeen.batch!.granularities,
      period: firstSeen.batch!.period,
      read: (q) =>
        q.params.mode === 'first_seen' && q.params.period === 'day'
          ? firstSeen.batch!.read({ ...q, params: {} })
          : variants.batch!.read(q),
    },
  };
}
