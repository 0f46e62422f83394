-- The hour's raw events with each event_id once: of the hour's copies of an id, the one
-- received first; Kafka position breaks a tie in received_at. events_across_hours.sql then
-- drops the ids another hour received first (METRICS.md §2): that is processed/events.
SELECT *
FROM raw_events
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at, kafka_partition, kafka_offset) = 1
ORDER BY ts, event_id
