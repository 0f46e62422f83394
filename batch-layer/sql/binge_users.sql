-- aggregated/binge_users (METRICS.md "Binge watching"): users with 3 video_complete events within
-- binge_window_ms whose third falls on the day. Any such triple implies one of consecutive completes
-- ending at the same third, so looking two completes back is enough. The window may start on the
-- previous day: prev_completes holds that day's completes of the last binge_window_ms.
WITH completes AS (
  SELECT user_id, event_id, ts FROM day_events WHERE event_type = 'video_complete'
  UNION ALL
  SELECT user_id, event_id, ts FROM prev_completes
),
triples AS (
  SELECT user_id, ts, ts - lag(ts, 2) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS span_ms
  FROM completes
)
SELECT
  getvariable('day') AS day,
  user_id,
  min(ts) AS first_binge_ts
FROM triples
WHERE span_ms <= getvariable('binge_window_ms')
  AND ts >= getvariable('day_start') AND ts < getvariable('day_end')
GROUP BY user_id
ORDER BY user_id
