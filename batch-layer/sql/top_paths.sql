-- aggregated/top_paths (METRICS.md "top paths"): the 20 most frequent paths to the first play of
-- the day's sessions, ties broken by path text ascending.
SELECT
  getvariable('day') AS day,
  CAST(row_number() OVER (ORDER BY count(*) DESC, path) AS INTEGER) AS rank,
  path,
  count(*) AS sessions
FROM sessions
WHERE has_play
GROUP BY path
ORDER BY rank
LIMIT 20
