-- processed/events: each event_id once across hours and days within the dedupe horizon
-- (METRICS.md §2). Of the hour's first copies (hour_firsts, events.sql), those whose id
-- another published hour within the horizon received earlier (neighbour_ids: those hours'
-- event_ids indexes) are left out: the copy received first wins, whatever its timestamp.
SELECT f.*
FROM hour_firsts f
WHERE NOT EXISTS (
  SELECT 1 FROM neighbour_ids n
  WHERE n.event_id = f.event_id
    AND (n.received_at < f.received_at
      OR (n.received_at = f.received_at AND (n.kafka_partition < f.kafka_partition
        OR (n.kafka_partition = f.kafka_partition AND n.kafka_offset < f.kafka_offset))))
)
ORDER BY ts, event_id
