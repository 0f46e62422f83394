/**
 * lifecycle: per day, or per ISO week (bucket = its Monday), the users who are new, returning,
 * resurrecting or dormant (METRICS.md "Lifecycle"). Batch only: lifecycle. A week's figures are
 * as of its latest published day before the daily watermark (week to date until its Sunday is),
 * given to each of its days for weekBuckets to fold.
 */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, type Sources } from './shared';
import { eachDayOfWeek, weekStartOf } from './weeks';

export type LifecyclePeriod = 'day' | 'week';

export interface LifecycleValue {
  /** The day the figures are as of: the bucket's own day, or the week's latest published day. */
  as_of_day: string | null;
  new: number;
  returning: number;
  resurrecting: number;
  dormant: number;
  /** new + returning + resurrecting: the period's active users. */
  active: number;
}

/** Periods starting in [$1, $2) of kind $3, each from its latest as-of day before $4 (the boundary). */
const lifecycleSql = `
  SELECT ${dayMsExpr('period_start')} AS bucket, CAST(arg_max(day, day) AS VARCHAR) AS as_of_day,
         arg_max(new_users, day) AS new_users, arg_max(returning_users, day) AS returning_users,
         arg_max(resurrecting_users, day) AS resurrecting_users, arg_max(dormant_users, day) AS dormant_users
  FROM lifecycle
  WHERE period = $3 AND ${dayMsExpr('period_start')} >= $1 AND ${dayMsExpr('period_start')} < $2 AND ${dayMsExpr('day')} < $4
  GROUP BY period_start`;

export function lifecycleMetric(src: Sources): MetricDef<{ period: LifecyclePeriod }, LifecycleValue> {
  return dailyView<{ period: LifecyclePeriod }, LifecycleValue>(
    src,
    'lifecycle',
    'lifecycle',
    () => ({ as_of_day: null, new: 0, returning: 0, resurrecting: 0, dormant: 0, active: 0 }),
    async (q) => {
      // A week that started before the range still answers for its days in it.
      const from = q.params.period === 'week' ? weekStartOf(q.from) : q.from;
      const rows = await src.batch.query(lifecycleSql, [from, q.to, q.params.period, q.boundary]);
      const values = new Map<number, LifecycleValue>();
      for (const r of rows) {
        const c = { new: num(r.new_users), returning: num(r.returning_users), resurrecting: num(r.resurrecting_users), dormant: num(r.dormant_users) };
        const v = { as_of_day: String(r.as_of_day), ...c, active: c.new + c.returning + c.resurrecting };
        if (q.params.period === 'week') eachDayOfWeek(values, Number(r.bucket), v);
        else values.set(Number(r.bucket), v);
      }
      return [{ key: {}, values }];
    },
  );
}
