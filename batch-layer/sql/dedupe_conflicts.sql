-- Ids this run counted that another hour counted too (it ran without seeing this hour's
-- index, or this run did without seeing its): the hour whose copy was received later is
-- wrong and must re-run. `ours_later` says which side that is.
SELECT DISTINCT
  n.hour_id,
  (n.received_at < e.received_at
    OR (n.received_at = e.received_at AND (n.kafka_partition < e.kafka_partition
      OR (n.kafka_partition = e.kafka_partition AND n.kafka_offset < e.kafka_offset)))) AS ours_later
FROM conflict_ids n
JOIN events e USING (event_id)
WHERE n.counted
ORDER BY 1, 2
