-- One shard's part of aggregated/retention_cohorts (METRICS.md "Retention and churn cohorts"),
-- as of day A = getvariable('day'), over the shard's users. Shards hold disjoint users, so
-- every column of the whole table is the sum of the shards' columns.
WITH activity AS (
  SELECT user_id, day FROM history_activity WHERE day < getvariable('day')
  UNION ALL
  SELECT user_id, day FROM user_daily_activity
),
users AS (
  SELECT user_id, min(day) AS first_seen, max(day) AS last_active, list(day) AS active_days
  FROM activity
  GROUP BY user_id
)
SELECT
  getvariable('day') AS as_of_day,
  first_seen AS cohort_day,
  count(*) AS cohort_size,
  CASE WHEN first_seen + 1 <= getvariable('day') THEN count(*) FILTER (WHERE list_contains(active_days, first_seen + 1)) END AS retained_d1,
  CASE WHEN first_seen + 7 <= getvariable('day') THEN count(*) FILTER (WHERE list_contains(active_days, first_seen + 7)) END AS retained_d7,
  CASE WHEN first_seen + 14 <= getvariable('day') THEN count(*) FILTER (WHERE list_contains(active_days, first_seen + 14)) END AS retained_d14,
  CASE WHEN first_seen + 28 <= getvariable('day') THEN count(*) FILTER (WHERE list_contains(active_days, first_seen + 28)) END AS retained_d28,
  count(*) FILTER (WHERE last_active <= getvariable('day') - 14) AS churned
FROM users
GROUP BY first_seen
ORDER BY cohort_day
