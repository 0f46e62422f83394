/**
 * Runs the collector: `npm run collector` (settings from the COLLECTOR_* and
 * KAFKA_* environment variables, see common/config.ts).
 */
import { runService } from '../../common/run-service';
import { startCollector } from './service';

await runService({
  name: 'collector',
  description: 'The HTTP collector: POST /v1/events (JSON, array or NDJSON) → Kafka events.raw, invalid events → events.dlq; GET /health, /metrics.',
  help: `
Settings (environment, defaults in common/config.ts):
  COLLECTOR_PORT, COLLECTOR_HOST       where it listens (8080, 0.0.0.0)
  COLLECTOR_API_KEYS                   comma-separated ingestion keys (dev-ingest-key)
  COLLECTOR_RATE_LIMIT_PER_MIN         requests per minute per key (1200000)
  COLLECTOR_ANONYMOUS_RATE_LIMIT_PER_MIN  per client address without a valid key (600)
  COLLECTOR_MAX_IN_FLIGHT_BYTES        backpressure: 429 beyond this many request bytes in progress (256 MiB)
  COLLECTOR_TRUST_PROXY                false | true | hop count | proxy addresses (false)
  NODE_ENV=production                  refuses dev-* keys and a 0.0.0.0 bind (ALLOW_INSECURE_SETTINGS=true overrides)
  COLLECTOR_MAX_BATCH_EVENTS / _BYTES  per request (1000 events / 1 MiB), 413 beyond
  COLLECTOR_MAX_IN_FLIGHT_EVENTS       backpressure: 429 beyond this many unacknowledged events
  KAFKA_BROKERS, TOPIC_RAW, TOPIC_DLQ`,
  async start({ cfg, log }) {
    const running = await startCollector(cfg, { log });
    log.info({ address: running.address, rawTopic: cfg.kafka.rawTopic, dlqTopic: cfg.kafka.dlqTopic, brokers: cfg.kafka.brokers }, 'collector listening');
    return running;
  },
  stopping: 'stopping: answering in-flight requests, flushing to Kafka',
});
