-- One shard's part of aggregated/daily_aggregates_with_dimensions. Shards hold disjoint users, so
-- even unique_users adds up exactly across shards. `level` keeps the grouping sets apart when a
-- dimension value happens to be the text 'ALL'.
WITH event_rows AS (
  SELECT
    grouping(device_type, app_version, country) AS level,
    CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
    CASE WHEN grouping(app_version) = 1 THEN 'ALL' ELSE app_version END AS app_version,
    CASE WHEN grouping(country) = 1 THEN 'ALL' ELSE country END AS country,
    count(*) AS total_events,
    count(*) FILTER (WHERE event_type = 'app_install') AS total_installs,
    count(*) FILTER (WHERE event_type = 'page_view') AS total_views,
    count(*) FILTER (WHERE event_type = 'video_play') AS total_plays,
    count(DISTINCT user_id) AS unique_users
  FROM day_events
  GROUP BY GROUPING SETS ((device_type, app_version, country), (device_type, country), (device_type), (country), ())
),
session_rows AS (
  SELECT
    grouping(device_type, app_version, country) AS level,
    CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
    CASE WHEN grouping(app_version) = 1 THEN 'ALL' ELSE app_version END AS app_version,
    CASE WHEN grouping(country) = 1 THEN 'ALL' ELSE country END AS country,
    count(*) AS total_sessions
  FROM sessions
  GROUP BY GROUPING SETS ((device_type, app_version, country), (device_type, country), (device_type), (country), ())
)
SELECT
  getvariable('day') AS day,
  e.level,
  e.device_type,
  e.app_version,
  e.country,
  e.total_events,
  e.total_installs,
  e.total_views,
  e.total_plays,
  coalesce(s.total_sessions, 0) AS total_sessions,
  e.unique_users
FROM event_rows e
LEFT JOIN session_rows s USING (level, device_type, app_version, country)
ORDER BY e.level, e.device_type, e.app_version, e.country
