-- Data-quality gate of a daily run: every check must hold before anything is published.
-- processed_rows and hours_published come from the day's 24 hourly manifests.
WITH counts AS (
  SELECT
    (SELECT coalesce(sum(events), 0) FROM sessions) AS session_events,
    (SELECT coalesce(sum(events), 0) FROM user_daily_activity) AS activity_events,
    (SELECT coalesce(sum(total_events), 0) FROM daily_aggregates_with_dimensions
      WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL') AS obt_total,
    (SELECT count(*) FROM sessions WHERE user_id IS NULL OR start_ts IS NULL OR device_type IS NULL) AS missing_mandatory,
    (SELECT count(*) - count(DISTINCT (user_id, session_idx)) FROM sessions) AS duplicate_sessions,
    getvariable('processed_rows') AS processed_rows,
    getvariable('hours_published') AS hours_published
)
SELECT * FROM (VALUES
  ('every_hour_present', (SELECT hours_published = 24 FROM counts), (SELECT hours_published || ' of 24 hours published' FROM counts)),
  ('mandatory_fields_not_null', (SELECT missing_mandatory = 0 FROM counts), (SELECT missing_mandatory || ' sessions miss a mandatory field' FROM counts)),
  ('session_key_unique', (SELECT duplicate_sessions = 0 FROM counts), (SELECT duplicate_sessions || ' duplicate (user_id, session_idx)' FROM counts)),
  ('session_events_sum_to_processed', (SELECT session_events = processed_rows FROM counts),
     (SELECT session_events || ' events in sessions, ' || processed_rows || ' processed rows' FROM counts)),
  ('activity_events_sum_to_processed', (SELECT activity_events = processed_rows FROM counts),
     (SELECT activity_events || ' events in user_daily_activity, ' || processed_rows || ' processed rows' FROM counts)),
  ('obt_total_is_processed', (SELECT obt_total = processed_rows FROM counts),
     (SELECT obt_total || ' events in the OBT total row, ' || processed_rows || ' processed rows' FROM counts))
) AS checks(name, ok, detail)
