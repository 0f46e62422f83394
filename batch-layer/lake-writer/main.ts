/**
 * `npm run lake-writer`: run the lake writer until SIGTERM/SIGINT, which flush
 * every open file, wait for the uploads and commit before exiting.
 */
import { runService } from '../../common/run-service';
import { startLakeWriter } from './service';

await runService({
  name: 'lake-writer',
  description: 'Consume events.raw and events.dlq (consumer group LAKE_GROUP) into zstd Parquet on S3 by event time.',
  help: `
Environment (defaults in common/config.ts):
  LAKE_ROLL_BYTES          roll a file at this many buffered bytes (128 MB)
  LAKE_ROLL_AGE_SEC        ...or when its oldest record is this old (60)
  LAKE_MAX_BUFFER_BYTES    pause consuming above this many buffered bytes (512 MB)
  LAKE_CATCHUP_LAG         a partition this many messages behind rolls the files its batch moved past (10000)
  LAKE_UPLOAD_CONCURRENCY  objects encoded/uploaded at once (2)
  LAKE_PART_SIZE_BYTES     multipart part size (16 MB)
  LAKE_DUCKDB_THREADS      threads of the Parquet encoder (2)
  LAKE_WRITER_PORT         /metrics and /health (9471)
  LAKE_SESSION_TIMEOUT_MS  consumer-group session timeout (10000)
  LAKE_GROUP, TOPIC_RAW, TOPIC_DLQ, S3_BUCKET, S3_ENDPOINT, KAFKA_BROKERS`,
  start: ({ cfg }) => startLakeWriter(cfg),
  stopping: 'stopping: flushing open files',
  stopFailed: 'stop failed; unflushed offsets stay uncommitted and are redelivered',
  // The stop encodes and uploads every open file (up to LAKE_MAX_BUFFER_BYTES) before it commits.
  stopTimeoutMs: 120_000,
});
