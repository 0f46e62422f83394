-- Data-quality gate of an hourly run: every check must hold before anything is published.
WITH counts AS (
  SELECT
    (SELECT count(*) FROM raw_events) AS raw_rows,
    (SELECT count(*) FROM events) AS processed_rows,
    (SELECT count(DISTINCT event_id) FROM events) AS distinct_ids,
    (SELECT count(*) FROM events
      WHERE event_id IS NULL OR event_type IS NULL OR user_id IS NULL OR ts IS NULL OR received_at IS NULL
         OR device_type IS NULL OR country IS NULL OR app_version IS NULL) AS missing_mandatory,
    (SELECT count(*) FROM events WHERE ts < getvariable('hour_start') OR ts >= getvariable('hour_end')) AS outside_hour,
    (SELECT sum(events) FROM hourly_events
      WHERE event_type = 'ALL' AND device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL') AS hourly_total,
    (SELECT sum(events) FROM hourly_events WHERE device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL' AND event_type <> 'ALL') AS by_type_total
)
SELECT * FROM (VALUES
  ('mandatory_fields_not_null', (SELECT missing_mandatory = 0 FROM counts), (SELECT missing_mandatory || ' processed rows miss a mandatory field' FROM counts)),
  ('event_id_unique', (SELECT distinct_ids = processed_rows FROM counts), (SELECT distinct_ids || ' distinct ids in ' || processed_rows || ' rows' FROM counts)),
  ('raw_rows_ge_processed', (SELECT raw_rows >= processed_rows FROM counts), (SELECT raw_rows || ' raw >= ' || processed_rows || ' processed' FROM counts)),
  ('events_in_period', (SELECT outside_hour = 0 FROM counts), (SELECT outside_hour || ' events outside the hour' FROM counts)),
  ('hourly_counts_sum_to_processed', (SELECT hourly_total = processed_rows AND coalesce(by_type_total, 0) = processed_rows FROM counts),
     (SELECT 'total ' || hourly_total || ', sum by type ' || coalesce(by_type_total, 0) || ', processed ' || processed_rows FROM counts))
) AS checks(name, ok, detail)
