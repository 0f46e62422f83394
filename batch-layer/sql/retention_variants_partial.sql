-- One shard's part of aggregated/retention_variants (METRICS.md "Retention variants"), as of day
-- A = getvariable('day'). Cohorts by day (C) or ISO week (W): first_seen and unbounded take each
-- user once, in the period of their first day; recurring takes them in every period they were
-- active in. Retained after K periods: active in period C+K (first_seen, recurring) or on any day
-- from the start of C+K on (unbounded); NULL while C+K starts after A. Shards hold disjoint users,
-- so the table is the sum of the shards' rows.
WITH activity AS (
  SELECT user_id, day FROM history_activity WHERE day < getvariable('day')
  UNION ALL
  SELECT user_id, day FROM user_daily_activity
),
users AS (
  SELECT user_id, min(day) AS first_seen, max(day) AS last_active FROM activity GROUP BY user_id
),
periods(period, step) AS (VALUES ('day', 1), ('week', 7)),
active_periods AS (
  SELECT DISTINCT a.user_id, p.period, p.step,
    CASE p.period WHEN 'day' THEN a.day ELSE CAST(date_trunc('week', a.day) AS DATE) END AS start
  FROM activity a, periods p
),
cohorts AS (
  SELECT m.mode, ap.period, ap.step, ap.user_id, ap.start AS cohort_start, u.last_active
  FROM active_periods ap
  JOIN users u USING (user_id)
  CROSS JOIN (VALUES ('first_seen'), ('recurring'), ('unbounded')) m(mode)
  WHERE m.mode = 'recurring'
     OR ap.start = CASE ap.period WHEN 'day' THEN u.first_seen ELSE CAST(date_trunc('week', u.first_seen) AS DATE) END
),
ks(period, k) AS (
  SELECT 'day', CAST(unnest([1, 7, 14, 28]) AS INTEGER)
  UNION ALL
  SELECT 'week', CAST(unnest(range(1, 9)) AS INTEGER)
),
flags AS (
  SELECT c.mode, c.period, c.cohort_start, ks.k, c.user_id, c.last_active,
    c.cohort_start + ks.k * c.step AS target,
    CASE WHEN c.mode = 'unbounded' THEN c.last_active >= c.cohort_start + ks.k * c.step
         ELSE t.user_id IS NOT NULL END AS retained
  FROM cohorts c
  JOIN ks USING (period)
  LEFT JOIN active_periods t ON t.user_id = c.user_id AND t.period = c.period AND t.start = c.cohort_start + ks.k * c.step
  -- first_seen by day is retention_cohorts
  WHERE NOT (c.mode = 'first_seen' AND c.period = 'day')
)
SELECT
  getvariable('day') AS as_of_day,
  mode,
  period,
  cohort_start,
  k,
  count(*) AS cohort_size,
  CASE WHEN min(target) <= getvariable('day') THEN count(*) FILTER (WHERE retained) END AS retained,
  count(*) FILTER (WHERE last_active <= getvariable('day') - 14) AS churned
FROM flags
GROUP BY mode, period, cohort_start, k
ORDER BY mode, period, cohort_start, k
