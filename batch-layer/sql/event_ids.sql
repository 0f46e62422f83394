-- processed/event_ids: the hour's de-duplication index, published with each hourly run and
-- read by the runs of the other hours within the dedupe horizon. One row per event_id of
-- the hour: where its first copy here was received (received_at, Kafka position), a digest
-- of that copy's payload (natural vs synthetic duplicates across hours), and whether this
-- hour counted it (false: another hour received it first).
SELECT
  f.event_id,
  getvariable('hour') AS hour_id,
  f.received_at,
  f.kafka_partition,
  f.kafka_offset,
  md5_number_lower(CAST(struct_pack(f.event_type, f.user_id, f.session_id, f.ts, f.schema_version, f.device_type, f.country,
    f.app_version, f.content_id, f.video_quality, f.playback_position, f.duration_ms, f.page, f.target, f.location,
    f.user_agent, f.ip_address, f.extra) AS VARCHAR)) AS payload_digest,
  f.event_id IN (SELECT event_id FROM events) AS counted
FROM hour_firsts f
ORDER BY f.event_id
