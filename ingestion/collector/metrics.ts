/** Prometheus metrics of one collector (own registry, so tests can run several in one process). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function collectorMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'collector_' });
  return {
    registry,
    requests: new Counter({
      name: 'collector_requests_total',
      help: 'HTTP requests by route and status code',
      labelNames: ['route', 'status'] as const,
      registers: [registry],
    }),
    accepted: new Counter({
      name: 'collector_events_accepted_total',
      help: 'Events acknowledged by Kafka on the raw topic',
      registers: [registry],
    }),
    rejected: new Counter({
      name: 'collector_events_rejected_total',
      help: 'Events rejected and written to the dead-letter topic, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    unacknowledged: new Counter({
      name: 'collector_events_unacknowledged_total',
      help: 'Events answered 503/429 (not in Kafka; the sender must retry), by cause',
      labelNames: ['cause'] as const,
      registers: [registry],
    }),
    produceLatency: new Histogram({
      name: 'collector_produce_latency_seconds',
      help: 'Time of one coalesced Kafka send (acks=all), by outcome',
      labelNames: ['outcome'] as const,
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    produceBatch: new Histogram({
      name: 'collector_produce_batch_messages',
      help: 'Messages per coalesced Kafka send',
      buckets: [1, 10, 50, 100, 500, 1000, 2500, 5000, 10000],
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'collector_in_flight_events',
      help: 'Events admitted and not yet answered (bounded by COLLECTOR_MAX_IN_FLIGHT_EVENTS)',
      registers: [registry],
    }),
    kafkaUp: new Gauge({
      name: 'collector_kafka_up',
      help: '1 while the collector can produce to Kafka',
      registers: [registry],
    }),
  };
}

export type CollectorMetrics = ReturnType<typeof collectorMetrics>;
