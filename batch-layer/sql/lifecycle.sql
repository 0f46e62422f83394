-- aggregated/lifecycle (METRICS.md "Lifecycle"): the day's counts of new, returning, resurrecting
-- and dormant users, and the same for its ISO week as of the day (week to date), from user_lifecycle.
SELECT
  getvariable('day') AS day,
  period,
  period_start,
  count(*) FILTER (WHERE state = 'new') AS new_users,
  count(*) FILTER (WHERE state = 'returning') AS returning_users,
  count(*) FILTER (WHERE state = 'resurrecting') AS resurrecting_users,
  count(*) FILTER (WHERE state = 'dormant') AS dormant_users
FROM (
  SELECT 'day' AS period, getvariable('day') AS period_start, day_state AS state FROM user_lifecycle
  UNION ALL
  SELECT 'week', CAST(date_trunc('week', getvariable('day')) AS DATE), week_state FROM user_lifecycle
)
GROUP BY period, period_start
ORDER BY period
