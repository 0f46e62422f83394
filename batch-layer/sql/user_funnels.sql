-- aggregated/user_funnels (METRICS.md "Funnels"): per funnel of funnel_steps, day and user who
-- entered its step 1 that day, the progress of the user's best attempt. An attempt starts at each
-- step-1 event; each next step is the user's first matching event after the previous step (order
-- by ts, then event_id) on the same UTC day and within window_ms of the step-1 event. The best
-- attempt reaches the most steps, the earliest-started among equals; its step-1 event gives the
-- device_type and country, and step_ts lists the times of the steps it reached.
WITH RECURSIVE ordered AS (
  SELECT *, CAST(epoch_ms(ts) AS DATE) AS day, row_number() OVER (PARTITION BY user_id ORDER BY ts, event_id) AS seq
  FROM day_events
),
matches AS (
  SELECT s.funnel, s.step, s.window_ms, e.user_id, e.day, e.seq, e.ts, e.device_type, e.country
  FROM ordered e
  JOIN funnel_steps s ON e.event_type = s.event_type
    AND (s.property IS NULL OR (s.property = 'content_id' AND e.content_id = s.value) OR (s.property = 'page' AND e.page = s.value))
),
-- Each match's next step: the nearest later match of the step after it (a later one could only
-- reach fewer steps within the same window). Materialized: DuckDB cannot run an ASOF join inside the
-- recursive CTE below, so the attempts follow these links by equality.
links AS MATERIALIZED (
  SELECT m.funnel, m.user_id, m.day, m.step, m.seq, n.seq AS next_seq, n.ts AS next_ts
  FROM matches m
  ASOF JOIN matches n ON n.funnel = m.funnel AND n.user_id = m.user_id AND n.day = m.day AND n.step = m.step + 1 AND m.seq < n.seq
),
attempts(funnel, user_id, day, start_seq, start_ts, window_ms, device_type, country, step, seq, step_ts) AS (
  SELECT funnel, user_id, day, seq, ts, window_ms, device_type, country, 1, seq, [ts]
  FROM matches WHERE step = 1
  UNION ALL
  SELECT a.funnel, a.user_id, a.day, a.start_seq, a.start_ts, a.window_ms, a.device_type, a.country, a.step + 1, l.next_seq, list_append(a.step_ts, l.next_ts)
  FROM attempts a
  JOIN links l ON l.funnel = a.funnel AND l.user_id = a.user_id AND l.day = a.day AND l.step = a.step AND l.seq = a.seq
  WHERE l.next_ts <= a.start_ts + a.window_ms
)
SELECT day, funnel, user_id, device_type, country, step AS steps_reached, step_ts
FROM attempts
QUALIFY row_number() OVER (PARTITION BY funnel, user_id, day ORDER BY step DESC, start_seq) = 1
ORDER BY funnel, user_id, day
