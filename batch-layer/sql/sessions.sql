-- processed/sessions (METRICS.md "Sessions", "Path analysis"): one row per session of a user on the day.
-- Per user, events ordered by (ts, event_id); a session starts at the user's first event of the
-- day and at every event more than session_gap_ms after the previous one. Sessions never cross
-- midnight because day_events holds one UTC day.
WITH ordered AS (
  SELECT
    user_id, event_id, event_type, ts, device_type, app_version, country,
    ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS gap_ms
  FROM day_events
),
numbered AS (
  SELECT
    *,
    sum(CASE WHEN gap_ms IS NULL OR gap_ms > getvariable('session_gap_ms') THEN 1 ELSE 0 END)
      OVER (PARTITION BY user_id ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS session_idx
  FROM ordered
),
positioned AS (
  SELECT
    *,
    row_number() OVER (PARTITION BY user_id, session_idx ORDER BY ts, event_id) AS pos
  FROM numbered
),
with_first_play AS (
  SELECT
    *,
    min(pos) FILTER (WHERE event_type = 'video_play') OVER (PARTITION BY user_id, session_idx) AS first_play_pos
  FROM positioned
)
SELECT
  user_id,
  getvariable('day') AS day,
  CAST(session_idx AS INTEGER) AS session_idx,
  min(ts) AS start_ts,
  max(ts) AS end_ts,
  max(ts) - min(ts) AS duration_ms,
  count(*) AS events,
  first(device_type ORDER BY pos) AS device_type,
  first(app_version ORDER BY pos) AS app_version,
  first(country ORDER BY pos) AS country,
  first_play_pos IS NOT NULL AS has_play,
  -- clicks_to_play: navigation events before the first play; NULL for a no-play session.
  CASE WHEN first_play_pos IS NOT NULL THEN
    count(*) FILTER (WHERE list_contains(getvariable('navigation_types'), event_type) AND pos < first_play_pos)
  END AS clicks_to_play,
  -- path: the last (at most) 5 event types before the first play, '(direct)' when there are none.
  CASE WHEN first_play_pos IS NOT NULL THEN
    coalesce(string_agg(event_type, '>' ORDER BY pos) FILTER (WHERE pos < first_play_pos AND pos >= first_play_pos - 5), '(direct)')
  END AS path
FROM with_first_play
GROUP BY user_id, session_idx, first_play_pos
ORDER BY user_id, session_idx
