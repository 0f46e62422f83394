/**
 * The collector as one running service (used by main.ts): the topics made sure
 * of, the HTTP server listening, Kafka connecting in the background.
 */
import { kafkaClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { logger, type Logger } from '../../common/log';
import { ensureTopics } from '../../common/topics';
import { buildCollector, type Collector } from './server';

export interface RunningCollector {
  collector: Collector;
  /** Where it listens, e.g. http://127.0.0.1:8080. */
  address: string;
  stop(): Promise<void>;
}

export async function startCollector(cfg: Config, opts: { log?: Logger } = {}): Promise<RunningCollector> {
  const log = opts.log ?? logger('collector');
  const collector = buildCollector(cfg, { log, defaultMetrics: true });
  // Topics normally exist (infra:up creates them); creating them here is a convenience
  // for a fresh broker and must not keep the collector from starting if Kafka is away.
  ensureTopics(kafkaClient(cfg, `${cfg.kafka.clientId}-collector-setup`, { probe: true }), cfg).catch((err: Error) =>
    log.warn({ err: err.message }, 'could not ensure topics (will still serve; produces fail until Kafka is back)'),
  );
  const address = await collector.start();
  return { collector, address, stop: () => collector.stop() };
}
