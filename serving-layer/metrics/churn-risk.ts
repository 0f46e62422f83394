/**
 * churn_risk: per day D, the users active on ≥ 3 of the 14 days D-20 .. D-7 and on none of the
 * 7 days D-6 .. D (METRICS.md "Churn risk"), counted, and listed a page at a time by user_id.
 * Batch only: churn_risk.
 */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, toSeries, type Sources } from './shared';

export interface ChurnRiskUser {
  user_id: string;
  /** Distinct active days within D-20 .. D-7. */
  active_days: number;
  last_active_day: string;
  reason: string;
}

export interface ChurnRiskValue {
  count: number;
  /** Users `offset + 1` .. `offset + limit` of the day, by user_id ascending. */
  users: ChurnRiskUser[];
}

export interface ChurnRiskParams {
  limit: number;
  offset: number;
}

/** Each day's count on every row; the page's users ($3 < rn <= $3 + $4), and the first row for days past the page. */
const churnRiskSql = `
  WITH ranked AS (
    SELECT ${dayMsExpr('day')} AS bucket, user_id, active_days, CAST(last_active_day AS VARCHAR) AS last_active_day, reason,
           count(*) OVER (PARTITION BY day) AS n, row_number() OVER (PARTITION BY day ORDER BY user_id) AS rn
    FROM churn_risk
    WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2
  )
  SELECT bucket, n, rn > $3 AND rn <= $3 + $4 AS in_page, user_id, active_days, last_active_day, reason
  FROM ranked
  WHERE rn = 1 OR (rn > $3 AND rn <= $3 + $4)
  ORDER BY bucket, rn`;

export function churnRiskMetric(src: Sources): MetricDef<ChurnRiskParams, ChurnRiskValue> {
  return dailyView<ChurnRiskParams, ChurnRiskValue>(
    src,
    'churn_risk',
    'churn_risk',
    () => ({ count: 0, users: [] }),
    async (q) => {
      const rows = await src.batch.query(churnRiskSql, [q.from, q.to, q.params.offset, q.params.limit]);
      const series = toSeries(rows, [], (r): ChurnRiskValue => ({ count: num(r.n), users: [] }));
      const values = series[0]?.values;
      for (const r of rows) {
        if (r.in_page !== true) continue;
        values!.get(Number(r.bucket))!.users.push({
          user_id: String(r.user_id),
          active_days: num(r.active_days),
          last_active_day: String(r.last_active_day),
          reason: String(r.reason),
        });
      }
      return series;
    },
  );
}
