-- aggregated/clicks_to_play (METRICS.md "Path analysis"): one row per day with the histogram of
-- clicks_to_play over sessions with a play (0 … 9 and 10+), the no-play sessions, and the average
-- clicks_to_play over sessions with a play (NULL when there is none).
SELECT
  getvariable('day') AS day,
  count(*) FILTER (WHERE has_play) AS play_sessions,
  count(*) FILTER (WHERE NOT has_play) AS no_play_sessions,
  avg(clicks_to_play) AS avg_clicks_to_play,
  count(*) FILTER (WHERE clicks_to_play = 0) AS clicks_0,
  count(*) FILTER (WHERE clicks_to_play = 1) AS clicks_1,
  count(*) FILTER (WHERE clicks_to_play = 2) AS clicks_2,
  count(*) FILTER (WHERE clicks_to_play = 3) AS clicks_3,
  count(*) FILTER (WHERE clicks_to_play = 4) AS clicks_4,
  count(*) FILTER (WHERE clicks_to_play = 5) AS clicks_5,
  count(*) FILTER (WHERE clicks_to_play = 6) AS clicks_6,
  count(*) FILTER (WHERE clicks_to_play = 7) AS clicks_7,
  count(*) FILTER (WHERE clicks_to_play = 8) AS clicks_8,
  count(*) FILTER (WHERE clicks_to_play = 9) AS clicks_9,
  count(*) FILTER (WHERE clicks_to_play >= 10) AS clicks_10_plus
FROM sessions
