-- aggregated/user_lifecycle (METRICS.md "Lifecycle"): each user's state on day D and in D's ISO
-- week as of D, for the users active in either period or in the one before it. A user is new in
-- the period of their first day, returning when also active in the previous period, resurrecting
-- when not (but seen before), dormant when active in the previous period and not in this one.
WITH activity AS (
  SELECT user_id, day FROM history_activity WHERE day < getvariable('day')
  UNION ALL
  SELECT user_id, day FROM user_daily_activity
),
bounds AS (
  SELECT getvariable('day') AS d, CAST(date_trunc('week', getvariable('day')) AS DATE) AS w
),
users AS (
  SELECT
    user_id,
    min(day) AS first_seen,
    bool_or(day = d) AS active_day,
    bool_or(day = d - 1) AS active_prev_day,
    bool_or(day >= w) AS active_week,
    bool_or(day >= w - 7 AND day < w) AS active_prev_week
  FROM activity, bounds
  GROUP BY user_id
)
SELECT
  d AS day,
  user_id,
  CASE WHEN active_day AND first_seen = d THEN 'new'
       WHEN active_day AND active_prev_day THEN 'returning'
       WHEN active_day THEN 'resurrecting'
       WHEN active_prev_day THEN 'dormant' END AS day_state,
  w AS week_start,
  CASE WHEN active_week AND first_seen >= w THEN 'new'
       WHEN active_week AND active_prev_week THEN 'returning'
       WHEN active_week THEN 'resurrecting'
       WHEN active_prev_week THEN 'dormant' END AS week_state
FROM users, bounds
WHERE active_day OR active_prev_day OR active_week OR active_prev_week
ORDER BY user_id
