-- aggregated/hourly_playback: plays, pauses, completes, rebuffers and their rates
-- (null when there is no play), overall (content_id 'ALL') and per content_id
-- (NULL = events without a content_id). Top content = rows ranked by plays.
SELECT
  getvariable('hour') AS hour_id,
  getvariable('hour_start') AS hour_start_ms,
  CASE WHEN grouping(content_id) = 1 THEN 'ALL' ELSE content_id END AS content_id,
  count(*) FILTER (WHERE event_type = 'video_play') AS plays,
  count(*) FILTER (WHERE event_type = 'video_pause') AS pauses,
  count(*) FILTER (WHERE event_type = 'video_complete') AS completes,
  count(*) FILTER (WHERE event_type = 'rebuffer') AS rebuffers,
  count(*) FILTER (WHERE event_type = 'video_pause') / nullif(count(*) FILTER (WHERE event_type = 'video_play'), 0) AS pause_rate,
  count(*) FILTER (WHERE event_type = 'video_complete') / nullif(count(*) FILTER (WHERE event_type = 'video_play'), 0) AS completion_rate
FROM events
GROUP BY GROUPING SETS ((), (content_id))
ORDER BY grouping(content_id) DESC, content_id NULLS FIRST
