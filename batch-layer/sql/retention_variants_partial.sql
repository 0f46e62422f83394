-- One shard's part of aggregated/retention_variants (METRICS.md "Retention variants"), as of day
-- A = getvariable('day'). Cohorts by day (C) or ISO week (W): first_seen and unbounded take each
-- user once, in the period of their first day; recurring takes them in every period they were
-- active in. Retained after K periods: active in period C+K (first_seen, recurring) or on any day
-- from the start of C+K on (unbounded); NULL while C+K starts after A. Shards hold disjoint users,
-- so the table is the sum of the shards' rows. Each user's active days and weeks are one list
-- (a lookup per cohort and K, no join over the activity).
WITH activity AS (
  SELECT user_id, day FROM history_activity WHERE day < getvariable('day')
  UNION ALL
  SELECT user_id, day FROM user_daily_activity
),
users AS (
  SELECT
    user_id,
    min(day) AS first_seen,
    max(day) AS last_active,
    list(DISTINCT day) AS days,
    list(DISTINCT CAST(date_trunc('week', day) AS DATE)) AS weeks
  FROM activity
  GROUP BY user_id
),
-- first_seen by day is retention_cohorts
cohorts AS (
  SELECT 'first_seen' AS mode, 'week' AS period, 7 AS step, CAST(date_trunc('week', first_seen) AS DATE) AS cohort_start, weeks AS periods, last_active FROM users
  UNION ALL
  SELECT 'recurring', 'day', 1, unnest(days), days, last_active FROM users
  UNION ALL
  SELECT 'recurring', 'week', 7, unnest(weeks), weeks, last_active FROM users
  UNION ALL
  SELECT 'unbounded', 'day', 1, first_seen, days, last_active FROM users
  UNION ALL
  SELECT 'unbounded', 'week', 7, CAST(date_trunc('week', first_seen) AS DATE), weeks, last_active FROM users
),
ks(period, k) AS (
  SELECT 'day', CAST(unnest([1, 7, 14, 28]) AS INTEGER)
  UNION ALL
  SELECT 'week', CAST(unnest(range(1, 9)) AS INTEGER)
)
SELECT
  getvariable('day') AS as_of_day,
  c.mode,
  c.period,
  c.cohort_start,
  ks.k,
  count(*) AS cohort_size,
  CASE WHEN c.cohort_start + ks.k * c.step <= getvariable('day') THEN
    count(*) FILTER (WHERE CASE WHEN c.mode = 'unbounded' THEN c.last_active >= c.cohort_start + ks.k * c.step
                                ELSE list_contains(c.periods, c.cohort_start + ks.k * c.step) END)
  END AS retained,
  count(*) FILTER (WHERE c.last_active <= getvariable('day') - 14) AS churned
FROM cohorts c
JOIN ks USING (period)
GROUP BY c.mode, c.period, c.step, c.cohort_start, ks.k
ORDER BY c.mode, c.period, c.cohort_start, ks.k
