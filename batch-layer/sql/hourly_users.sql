-- aggregated/hourly_users: exact hourly active users (distinct user_id), overall ('ALL') and per device_type.
SELECT
  getvariable('hour') AS hour_id,
  getvariable('hour_start') AS hour_start_ms,
  CASE WHEN grouping(device_type) = 1 THEN 'ALL' ELSE device_type END AS device_type,
  count(DISTINCT user_id) AS users
FROM events
GROUP BY GROUPING SETS ((), (device_type))
ORDER BY 3, 4
