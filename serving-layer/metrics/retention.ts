/**
 * retention: per cohort day C, the cohort's size and its D1/D7/D14/D28 retention and churn
 * (METRICS.md), as of the latest published day before the daily watermark. Batch only.
 */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, numOrNull, toSeries, type Sources } from './shared';

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

/** The cohorts of [$1, $2) as of the latest as-of day before $3 (the boundary). */
const retentionSql = `
  WITH latest AS (SELECT max(as_of_day) AS a FROM retention_cohorts WHERE ${dayMsExpr('as_of_day')} < $3)
  SELECT ${dayMsExpr('cohort_day')} AS bucket, CAST(as_of_day AS VARCHAR) AS as_of_day,
         cohort_size, retained_d1, retained_d7, retained_d14, retained_d28, churned
  FROM retention_cohorts, latest
  WHERE as_of_day = latest.a AND ${dayMsExpr('cohort_day')} >= $1 AND ${dayMsExpr('cohort_day')} < $2`;

/** Buckets are cohort days C; the figures are as of the latest day before the daily watermark. */
export function retentionMetric(src: Sources): MetricDef<Record<string, never>, RetentionValue> {
  return dailyView<Record<string, never>, RetentionValue>(
    src,
    'retention',
    'retention_cohorts',
    () => ({ as_of_day: null, cohort_size: 0, retained_d1: null, retained_d7: null, retained_d14: null, retained_d28: null, churned: 0 }),
    async (q) => {
      const rows = await src.batch.query(retentionSql, [q.from, q.to, q.boundary]);
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
