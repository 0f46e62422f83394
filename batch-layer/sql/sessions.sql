-- processed/sessions (METRICS.md "Sessions", "Path analysis"): one row per session of a user on the day.
-- Per user, events ordered by (ts, event_id); a session starts at the user's first event of the
-- day and at every event more than session_gap_ms after the previous one. Sessions never cross
-- midnight because day_events holds one UTC day.
--
-- Shaped for speed (this is the daily job's heaviest statement): one sort by (user, ts, event_id)
-- computes everything positional at once: the user's running row number rn, the gap, the number
-- of navigation events before each row, and, on play rows only, the 5 event types before it. A
-- second, cheaper window (ordered by the integer rn) numbers the sessions. The session rows then
-- come from plain aggregates (arg_min by rn instead of ordered aggregates, which cost 2x here):
--   clicks_to_play = navigation before the first play - navigation before the session's first event
--   path           = the last min(5, events before the first play) of the play row's 5 types
-- test/unit/batch-sql.test.ts holds the edge cases; test/support/expected-sql.ts the definition
-- written plainly, which the integration tests compare against row for row.
WITH ordered AS (
  SELECT
    user_id, event_type, ts, device_type, app_version, country,
    row_number() OVER w AS rn,
    CASE WHEN ts - lag(ts) OVER w <= getvariable('session_gap_ms') THEN 0 ELSE 1 END AS starts,
    count(*) FILTER (WHERE list_contains(getvariable('navigation_types'), event_type))
      OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS nav_before,
    CASE WHEN event_type = 'video_play' THEN
      [lag(event_type, 5) OVER w, lag(event_type, 4) OVER w, lag(event_type, 3) OVER w, lag(event_type, 2) OVER w, lag(event_type, 1) OVER w]
    END AS back5
  FROM day_events
  WINDOW w AS (PARTITION BY user_id ORDER BY ts, event_id)
),
numbered AS (
  SELECT *, sum(starts) OVER (PARTITION BY user_id ORDER BY rn ROWS UNBOUNDED PRECEDING) AS session_idx
  FROM ordered
),
grouped AS (
  SELECT
    user_id,
    session_idx,
    min(ts) AS start_ts,
    max(ts) AS end_ts,
    count(*) AS events,
    min(rn) AS first_rn,
    -- arg_min_null: the first event's value even when it is NULL, as first(… ORDER BY …) would.
    arg_min_null(device_type, rn) AS device_type,
    arg_min_null(app_version, rn) AS app_version,
    arg_min_null(country, rn) AS country,
    arg_min(nav_before, rn) AS nav_before_session,
    arg_min({'rn': rn, 'nav_before': nav_before, 'back5': back5}, rn) FILTER (WHERE event_type = 'video_play') AS first_play
  FROM numbered
  GROUP BY user_id, session_idx
)
SELECT
  user_id,
  getvariable('day') AS day,
  CAST(session_idx AS INTEGER) AS session_idx,
  start_ts,
  end_ts,
  end_ts - start_ts AS duration_ms,
  events,
  device_type,
  app_version,
  country,
  first_play IS NOT NULL AS has_play,
  -- clicks_to_play: navigation events before the first play; NULL for a no-play session.
  first_play.nav_before - nav_before_session AS clicks_to_play,
  -- path: the last (at most) 5 event types before the first play, '(direct)' when there are none.
  CASE
    WHEN first_play IS NULL THEN NULL
    WHEN first_play.rn = first_rn THEN '(direct)'
    ELSE array_to_string(first_play.back5[6 - least(first_play.rn - first_rn, 5):5], '>')
  END AS path
FROM grouped
ORDER BY user_id, session_idx
