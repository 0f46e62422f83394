-- Duplicates across hours, for the run manifest (added to raw_duplicates.sql's): each first
-- copy of this hour that lost to a copy another hour received earlier is natural when its
-- payload equals the winner's and synthetic otherwise (another timestamp is another payload).
WITH winners AS (
  SELECT event_id, first(payload_digest ORDER BY received_at, kafka_partition, kafka_offset) AS payload_digest
  FROM neighbour_ids
  GROUP BY event_id
)
SELECT
  count(*) FILTER (WHERE w.payload_digest = i.payload_digest) AS natural,
  count(*) FILTER (WHERE w.payload_digest <> i.payload_digest) AS synthetic
FROM event_ids i
JOIN winners w USING (event_id)
WHERE NOT i.counted
