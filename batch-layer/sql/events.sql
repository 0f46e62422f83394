-- processed/events: the hour's raw events with each event_id once (METRICS.md §2).
-- Of the copies of an id, the one received first wins; Kafka position breaks a tie in received_at.
SELECT *
FROM raw_events
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at, kafka_partition, kafka_offset) = 1
ORDER BY ts, event_id
