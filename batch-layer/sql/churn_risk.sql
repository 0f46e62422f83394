-- aggregated/churn_risk (METRICS.md "Churn risk"): as of day D, the users active on at least 3 of
-- the 14 days D-20 .. D-7 and on none of the 7 days D-6 .. D, with the reason in words.
WITH activity AS (
  SELECT user_id, day FROM history_activity WHERE day >= getvariable('day') - 20 AND day < getvariable('day')
  UNION ALL
  SELECT user_id, day FROM user_daily_activity
),
users AS (
  SELECT
    user_id,
    count(DISTINCT day) FILTER (WHERE day <= getvariable('day') - 7) AS active_days,
    count(*) FILTER (WHERE day > getvariable('day') - 7) AS recent_days,
    max(day) AS last_active_day
  FROM activity
  GROUP BY user_id
)
SELECT
  getvariable('day') AS day,
  user_id,
  active_days,
  last_active_day,
  format('active on {} of the 14 days {} to {}, last on {}, and on none of the 7 days {} to {}',
    active_days, getvariable('day') - 20, getvariable('day') - 7, last_active_day, getvariable('day') - 6, getvariable('day')) AS reason
FROM users
WHERE active_days >= 3 AND recent_days = 0
ORDER BY user_id
