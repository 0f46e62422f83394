/**
 * `npm run speed`: run the speed layer (events.raw → Redis) until SIGTERM/SIGINT.
 * A SIGKILL loses nothing: Redis holds the applied offsets with the counts.
 */
import { runService } from '../common/run-service';
import { startSpeedLayer } from './service';

await runService<{ alerts: boolean }>({
  name: 'speed',
  description: 'Consume events.raw (consumer group SPEED_GROUP) into the Redis key families of common/speed-keys.ts, exactly once.',
  options: (command) => command.option('--no-alerts', 'do not evaluate the alert rules in this process'),
  help: `
Environment (defaults in common/config.ts):
  SPEED_PORT                      /metrics and /health (9472; 0 = any free port)
  SPEED_RETENTION_MS              event-time retention of the minute/hour/day families (48 h)
  SPEED_SECOND_RETENTION_MS       ...of the per-second counts (2 h)
  SPEED_DEDUPE_WINDOW_MS          copies of an event_id that arrive within this of each other count once, whatever their timestamps (5 min)
  SPEED_MAX_DEVICE_TYPES_PER_DAY  distinct device_type values per day before new ones count as "other" (200)
  SPEED_PARTITIONS_CONCURRENCY    partitions processed at once (2)
  SPEED_MAX_BYTES_PER_PARTITION   fetch size per partition (4 MiB); SPEED_MAX_BYTES: per fetch (32 MiB)
  SPEED_FROM_BEGINNING            a group without stored offsets starts at the earliest offset (true)
  SPEED_REDIS_TIMEOUT_MS          a Redis step unanswered this long is retried (10 s)
  SPEED_MAX_RETRY_BACKOFF_MS      backoff ceiling while Redis is unreachable (5 s)
  SPEED_SESSION_TIMEOUT_MS        Kafka group session timeout (10 s; min 6 s)
  SPEED_USER_FEATURES             keep each user's feature hash for /v1/users/{id}/features (true; ~8 µs of Redis per event)
  SPEED_STEP_MAX_ARGS, SPEED_STEP_MAX_KEYS, SPEED_STEP_MAX_BYTES
                                  bounds of one Redis step (50000, 5000, 4 MiB); a batch is applied as one or more steps
  SPEED_DEGRADED_AFTER_FAILURES   /health is 503 once the same step failed this many times in a row (3)
  SPEED_ALERT_INTERVAL_MS, SPEED_ALERT_WINDOW_MS, SPEED_ALERT_MAX_ERROR_RATE_PCT (5),
  SPEED_ALERT_MIN_EVENTS_PER_SEC (0 = off), SPEED_ALERT_MAX_LAG (100000), SPEED_ALERT_MAX_LATENCY_MS (5000)
  SPEED_GROUP, TOPIC_RAW, TOPIC_DLQ, REDIS_URL, REDIS_KEY_PREFIX, KAFKA_BROKERS

When Redis loses data (a crash with appendfsync everysec, a restore from an older AOF), the layer
notices: a step above Redis' stored offset is refused and the partition re-read from there
(speed_redis_gaps_total); a partition the group consumed but Redis has no offset for is rebuilt
from Kafka's earliest offset (speed_redis_rebuilds_total, alert redis_data_lost until done).`,
  start: ({ cfg, options }) => startSpeedLayer(cfg, { alerts: options.alerts, defaultMetrics: true }),
  stopFailed: 'stop failed; unapplied batches are redelivered on restart',
});
