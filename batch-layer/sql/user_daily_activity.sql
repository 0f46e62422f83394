-- processed/user_daily_activity: one row per user active on the day. first_seen_day is the
-- day of the user's first event in the lake: the earliest day in the activity history, or today.
WITH today AS (
  SELECT
    user_id,
    count(*) AS events,
    count(*) FILTER (WHERE event_type = 'video_play') AS plays,
    count(*) FILTER (WHERE event_type = 'video_complete') AS completes,
    min(ts) AS first_event_ts,
    max(ts) AS last_event_ts
  FROM day_events
  GROUP BY user_id
),
today_sessions AS (
  SELECT user_id, count(*) AS sessions FROM sessions GROUP BY user_id
),
earlier AS (
  SELECT user_id, min(day) AS first_day FROM history_activity WHERE day < getvariable('day') GROUP BY user_id
)
SELECT
  t.user_id,
  getvariable('day') AS day,
  t.events,
  s.sessions,
  t.plays,
  t.completes,
  t.first_event_ts,
  t.last_event_ts,
  coalesce(e.first_day, getvariable('day')) AS first_seen_day
FROM today t
JOIN today_sessions s USING (user_id)
LEFT JOIN earlier e USING (user_id)
ORDER BY t.user_id
