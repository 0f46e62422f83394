/**
 * Runs the collector: `npm run collector` (settings from the COLLECTOR_* and
 * KAFKA_* environment variables, see common/config.ts).
 */
import './kafkajs-linear-grouping'; // first: before anything loads kafkajs (see the module)
import { config, ConfigError } from '../../common/config';
import { kafkaClient } from '../../common/clients';
import { logger } from '../../common/log';
import { ensureTopics } from '../../common/topics';
import { buildCollector } from './server';
import { stopOnSignals } from '../../common/process';
import { Command } from 'commander';

new Command('collector')
  .description('The HTTP collector: POST /v1/events (JSON, array or NDJSON) → Kafka events.raw, invalid events → events.dlq; GET /health, /metrics.')
  .addHelpText(
    'after',
    `
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
  )
  .parse();

const cfg = config();
const log = logger('collector');
const collector = buildCollector(cfg, { log, defaultMetrics: true });

// Topics normally exist (infra:up creates them); creating them here is a convenience
// for a fresh broker and must not keep the collector from starting if Kafka is away.
ensureTopics(kafkaClient(cfg, `${cfg.kafka.clientId}-collector-setup`, { probe: true }), cfg).catch((err: Error) =>
  log.warn({ err: err.message }, 'could not ensure topics (will still serve; produces fail until Kafka is back)'),
);

const address = await collector.start().catch((err: unknown) => {
  // A setting to fix, not a crash: say which, without a stack trace.
  if (err instanceof ConfigError) {
    log.fatal(err.message);
    process.exit(2);
  }
  throw err;
});
log.info({ address, rawTopic: cfg.kafka.rawTopic, dlqTopic: cfg.kafka.dlqTopic, brokers: cfg.kafka.brokers }, 'collector listening');

stopOnSignals(log, () => collector.stop(), { stopping: 'stopping: answering in-flight requests, flushing to Kafka', onFailure: 'unclean stop' });
