-- Duplicates in the raw hour, for the run manifest (Snowplow's event fingerprint):
-- each copy of an event_id after the first received is natural when its payload equals
-- the winner's and synthetic otherwise. Two rows from the same Kafka message (same
-- partition and offset, e.g. left behind by an interrupted compaction) are one send, not a duplicate.
WITH sends AS (
  SELECT DISTINCT ON (event_id, kafka_partition, kafka_offset)
    event_id, received_at, kafka_partition, kafka_offset,
    struct_pack(event_type, user_id, session_id, ts, schema_version, device_type, country, app_version, content_id,
                video_quality, playback_position, duration_ms, page, target, location, user_agent, ip_address, extra) AS payload
  FROM raw_events
  ORDER BY event_id, kafka_partition, kafka_offset, received_at
),
ranked AS (
  SELECT
    row_number() OVER arrival AS copy_no,
    payload IS NOT DISTINCT FROM first_value(payload) OVER arrival AS same_payload
  FROM sends
  WINDOW arrival AS (PARTITION BY event_id ORDER BY received_at, kafka_partition, kafka_offset)
)
SELECT
  count(*) FILTER (WHERE copy_no > 1 AND same_payload) AS natural,
  count(*) FILTER (WHERE copy_no > 1 AND NOT same_payload) AS synthetic
FROM ranked
