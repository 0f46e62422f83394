/** Prometheus metrics of the speed layer (one registry per process, or per test). */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export function speedMetrics(opts: { defaults?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaults) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    consumed: new Counter({ name: 'speed_events_consumed_total', help: 'Messages consumed from events.raw (rate() = consumed events/s)', registers }),
    applied: new Counter({ name: 'speed_events_applied_total', help: 'Distinct events inside the retention applied to Redis', registers }),
    batches: new Counter({ name: 'speed_batches_total', help: 'Redis step attempts by outcome (a batch is one or more steps)', labelNames: ['result'] as const, registers }),
    applySeconds: new Histogram({
      name: 'speed_batch_apply_seconds',
      help: 'Fold + atomic Redis step of one step (a batch is one or more steps)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    freshness: new Histogram({
      name: 'speed_freshness_seconds',
      help: 'now − received_at when an event became visible in Redis',
      // Fine around the 1 s objective, so p95/p99 interpolate within ±100 ms there.
      buckets: [0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600],
      registers,
    }),
    // Sizes of the applied steps: what SPEED_STEP_MAX_ARGS / _KEYS / _BYTES bound.
    stepArgs: new Histogram({ name: 'speed_step_args', help: 'ARGV entries of one applied Redis step', buckets: [100, 1000, 5000, 10_000, 20_000, 50_000, 100_000], registers }),
    stepKeys: new Histogram({ name: 'speed_step_keys', help: 'Keys of one applied Redis step', buckets: [10, 100, 500, 1000, 2000, 5000, 10_000], registers }),
    stepBytes: new Histogram({ name: 'speed_step_bytes', help: 'Bytes of keys and arguments of one applied Redis step', buckets: [1e4, 1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6], registers }),
    stepEvents: new Histogram({ name: 'speed_step_messages', help: 'Messages covered by one applied Redis step', buckets: [10, 100, 500, 1000, 2500, 5000, 10_000, 25_000], registers }),
    lag: new Gauge({ name: 'speed_consumer_lag', help: 'Messages of events.raw not yet applied, per partition', labelNames: ['partition'] as const, registers }),
    late: new Counter({ name: 'speed_late_events_total', help: 'Events older than a family retention (left to the batch layer)', labelNames: ['family'] as const, registers }),
    dedupeUnremembered: new Counter({
      name: 'speed_dedupe_unremembered_total',
      help: 'Events counted but not remembered for the dedupe: their arrival epoch set was full (SPEED_DEDUPE_MAX_IDS); a later copy counts again',
      registers,
    }),
    duplicates: new Counter({ name: 'speed_duplicates_skipped_total', help: 'Events skipped because their event_id was already applied', registers }),
    dimensionOverflow: new Counter({ name: 'speed_dimension_overflow_total', help: 'Events whose dimension value was over its daily bound and counted as "other"', labelNames: ['dimension'] as const, registers }),
    unparseable: new Counter({ name: 'speed_unparseable_total', help: 'Messages on events.raw that are not an EventRecord (skipped)', registers }),
    applyFailures: new Counter({ name: 'speed_apply_failures_total', help: 'Failed Redis steps (the batch is retried, not dropped)', registers }),
    // Redis going back in time (docs/operations.md, "When Redis loses data").
    redisGaps: new Counter({ name: 'speed_redis_gaps_total', help: 'Times Redis was found behind this consumer (its stored offset below a step: applied steps lost); the partition is re-read from there', registers }),
    redisRebuilds: new Counter({ name: 'speed_redis_rebuilds_total', help: 'Partitions the group had consumed found without any offset in Redis (its data lost); rebuilt from the earliest offset Kafka holds', registers }),
    lostForGood: new Counter({ name: 'speed_redis_lost_messages_total', help: 'Messages whose effects Redis lost and Kafka no longer holds (beyond its retention): missing from the speed views', registers }),
    alertFiring: new Gauge({ name: 'speed_alert_firing', help: '1 while an alert rule fires', labelNames: ['rule'] as const, registers }),
  };
}

export type SpeedMetrics = ReturnType<typeof speedMetrics>;
