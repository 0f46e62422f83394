/**
 * Runs the collector: `npm run collector` (settings from the COLLECTOR_* and
 * KAFKA_* environment variables, see common/config.ts).
 */
import { config } from '../../common/config';
import { kafkaClient } from '../../common/clients';
import { logger } from '../../common/log';
import { ensureTopics } from '../../common/topics';
import { buildCollector } from './server';
import { stopOnSignals } from '../../common/process';

const cfg = config();
const log = logger('collector');
const collector = buildCollector(cfg, { log, defaultMetrics: true });

// Topics normally exist (infra:up creates them); creating them here is a convenience
// for a fresh broker and must not keep the collector from starting if Kafka is away.
ensureTopics(kafkaClient(cfg, `${cfg.kafka.clientId}-collector-setup`, { probe: true }), cfg).catch((err: Error) =>
  log.warn({ err: err.message }, 'could not ensure topics (will still serve; produces fail until Kafka is back)'),
);

const address = await collector.start();
log.info({ address, rawTopic: cfg.kafka.rawTopic, dlqTopic: cfg.kafka.dlqTopic, brokers: cfg.kafka.brokers }, 'collector listening');

stopOnSignals(log, () => collector.stop(), { stopping: 'stopping: answering in-flight requests, flushing to Kafka', onFailure: 'unclean stop' });
