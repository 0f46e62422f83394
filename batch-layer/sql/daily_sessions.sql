-- aggregated/daily_sessions (METRICS.md "daily session metrics"): by day × device_type of the
-- session's first event, and over all devices ('ALL'). Median is the continuous median
-- (mean of the two middle durations for an even count). Needs every session of the day at once.
SELECT
  getvariable('day') AS day,
  CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
  count(*) AS sessions,
  avg(duration_ms) AS avg_duration_ms,
  median(duration_ms) AS median_duration_ms,
  count(*) FILTER (WHERE events = 1) / count(*) AS bounce_rate,
  avg(events) AS avg_events_per_session
FROM sessions
GROUP BY GROUPING SETS ((), (device_type))
HAVING count(*) > 0
ORDER BY grouping(device_type) DESC, device_type
