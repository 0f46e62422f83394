-- aggregated/retention_cohorts: per cohort day C, as of the day A: cohort_size, users retained on
-- C+1/7/14/28 (NULL while C+K is after A) and users churned (last active day <= A - 14).
-- The shards' partial counts add up exactly (each user lives in one shard).
SELECT
  as_of_day,
  cohort_day,
  CAST(sum(cohort_size) AS BIGINT) AS cohort_size,
  CAST(sum(retained_d1) AS BIGINT) AS retained_d1,
  CAST(sum(retained_d7) AS BIGINT) AS retained_d7,
  CAST(sum(retained_d14) AS BIGINT) AS retained_d14,
  CAST(sum(retained_d28) AS BIGINT) AS retained_d28,
  CAST(sum(churned) AS BIGINT) AS churned
FROM retention_cohorts_partial
GROUP BY as_of_day, cohort_day
ORDER BY cohort_day
