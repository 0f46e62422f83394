-- aggregated/hourly_events: events of the hour by every combination of
-- event_type × device_type × country × app_version; a rolled-up dimension reads 'ALL'.
SELECT
  getvariable('hour') AS hour_id,
  getvariable('hour_start') AS hour_start_ms,
  CASE WHEN grouping(event_type) = 1 THEN 'ALL' ELSE event_type END AS event_type,
  CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
  CASE WHEN grouping(country) = 1 THEN 'ALL' ELSE country END AS country,
  CASE WHEN grouping(app_version) = 1 THEN 'ALL' ELSE app_version END AS app_version,
  count(*) AS events
FROM events
GROUP BY CUBE (event_type, device_type, country, app_version)
ORDER BY 3, 4, 5, 6, 7
