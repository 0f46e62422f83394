-- aggregated/retention_variants (METRICS.md "Retention variants"): the shards' partial counts
-- summed (each user lives in one shard; retained is NULL in every shard or in none).
SELECT
  as_of_day,
  mode,
  period,
  cohort_start,
  k,
  CAST(sum(cohort_size) AS BIGINT) AS cohort_size,
  CAST(sum(retained) AS BIGINT) AS retained,
  CAST(sum(churned) AS BIGINT) AS churned
FROM retention_variants_partial
GROUP BY as_of_day, mode, period, cohort_start, k
ORDER BY mode, period, cohort_start, k
