-- aggregated/daily_aggregates_with_dimensions, the one big table (METRICS.md): day × device_type ×
-- app_version × country with the roll-up rows of the grouping sets (day, device, app_version, country),
-- (day, device, country), (day, device), (day, country), (day); 'ALL' marks a rolled-up dimension.
-- total_sessions counts sessions by the dimensions of their first event. unique_users is exact at every
-- level: the sum over user-disjoint shards of exact distinct counts, never a sum over lower levels.
SELECT
  day,
  device_type,
  app_version,
  country,
  CAST(sum(total_events) AS BIGINT) AS total_events,
  CAST(sum(total_installs) AS BIGINT) AS total_installs,
  CAST(sum(total_views) AS BIGINT) AS total_views,
  CAST(sum(total_plays) AS BIGINT) AS total_plays,
  CAST(sum(total_sessions) AS BIGINT) AS total_sessions,
  CAST(sum(unique_users) AS BIGINT) AS unique_users
FROM daily_aggregates_partial
GROUP BY day, level, device_type, app_version, country
ORDER BY level, device_type, app_version, country
