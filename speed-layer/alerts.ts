/**
 * Alerting: rules evaluated every few seconds over what Kafka and Redis show,
 * firing alerts kept in Redis ({alert}:firing, read through
 * common/speed-keys.ts readAlerts) and logged when they change state.
 *
 * The rules are a pure function of samples (unit-tested); the evaluator only
 * gathers the samples and publishes the outcome. Several speed-layer processes
 * may evaluate at once: they write the same values.
 */
import type { Redis } from 'ioredis';
import type { Admin } from 'kafkajs';
import type { Config } from '../common/config';
import { logger, type Logger } from '../common/log';
import { readAlerts, readFreshness, readOffsets, speedKeys, type Alert, type AlertRule } from '../common/speed-keys';
import type { SpeedMetrics } from './metrics';

export interface AlertSample {
  at: number;
  /** Sum of the end offsets of events.raw / events.dlq (messages ever written). */
  rawEnd: number;
  dlqEnd: number;
  /** Messages of events.raw not yet applied (all partitions). */
  lag: number;
  /** Freshness of the newest applied batch and when it was applied. */
  freshness: { lastMs: number; at: number } | null;
}

export interface AlertThresholds {
  maxErrorRatePct: number;
  minEventsPerSec: number;
  maxLag: number;
  maxLatencyMs: number;
}

export interface RuleOutcome {
  rule: AlertRule;
  firing: boolean;
  value: number;
  threshold: number;
  message: string;
}

/**
 * Evaluate every rule. `samples` are oldest first and cover the trailing
 * window; rates need two samples, so with one sample they do not fire.
 */
export function evaluateRules(samples: readonly AlertSample[], t: AlertThresholds, now: number): RuleOutcome[] {
  const out: RuleOutcome[] = [];
  const last = samples[samples.length - 1];
  const first = samples[0];
  const spanSec = last && first ? (last.at - first.at) / 1000 : 0;
  const accepted = spanSec > 0 ? last.rawEnd - first.rawEnd : 0;
  const rejected = spanSec > 0 ? last.dlqEnd - first.dlqEnd : 0;

  const errorRate = accepted + rejected > 0 ? rejected / (accepted + rejected) : 0;
  out.push({
    rule: 'error_rate',
    firing: errorRate * 100 > t.maxErrorRatePct,
    value: errorRate,
    threshold: t.maxErrorRatePct / 100,
    message: `${rejected} of ${accepted + rejected} events dead-lettered in the last ${Math.round(spanSec)} s`,
  });

  const rate = spanSec > 0 ? accepted / spanSec : 0;
  out.push({
    rule: 'throughput',
    firing: t.minEventsPerSec > 0 && spanSec > 0 && rate < t.minEventsPerSec,
    value: rate,
    threshold: t.minEventsPerSec,
    message: `${rate.toFixed(1)} events/s accepted into events.raw`,
  });

  const lag = last?.lag ?? 0;
  out.push({ rule: 'consumer_lag', firing: lag > t.maxLag, value: lag, threshold: t.maxLag, message: `${lag} messages not yet applied to Redis` });

  // A stuck consumer stops updating its freshness: while messages wait, the
  // time since the last apply is a lower bound of their latency.
  const fresh = last?.freshness ?? null;
  const latency = fresh === null ? (lag > 0 && first ? now - first.at : 0) : Math.max(fresh.lastMs, lag > 0 ? now - fresh.at : 0);
  out.push({
    rule: 'latency',
    firing: latency > t.maxLatencyMs,
    value: latency,
    threshold: t.maxLatencyMs,
    message: `end-to-end latency (collector accept → visible in Redis) ${latency} ms`,
  });
  return out;
}

async function endOffsets(admin: Admin, topic: string): Promise<Map<number, { high: number; low: number }>> {
  const rows = await admin.fetchTopicOffsets(topic);
  return new Map(rows.map((r) => [r.partition, { high: Number(r.high), low: Number(r.low) }]));
}

function sum(m: Map<number, { high: number }>): number {
  let s = 0;
  for (const v of m.values()) s += v.high;
  return s;
}

export class AlertEvaluator {
  private samples: AlertSample[] = [];
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly cfg: Config,
    private readonly redis: Redis,
    private readonly admin: Admin,
    private readonly metrics: SpeedMetrics,
    log?: Logger,
  ) {
    this.log = log ?? logger('speed-alerts');
  }

  start(): void {
    const run = (): void => {
      this.tick().catch((err: Error) => this.log.warn({ err: err.message }, 'alert evaluation failed'));
    };
    this.timer = setInterval(run, this.cfg.speed.alerts.intervalMs);
    this.timer.unref();
    run();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Gather one sample, evaluate, publish. Returns the outcomes. */
  async tick(now = Date.now()): Promise<RuleOutcome[]> {
    const { cfg } = this;
    const raw = await endOffsets(this.admin, cfg.kafka.rawTopic);
    const dlq = await endOffsets(this.admin, cfg.kafka.dlqTopic).catch(() => new Map<number, { high: number; low: number }>());
    const [committed] = await this.admin.fetchOffsets({ groupId: cfg.kafka.speedGroup, topics: [cfg.kafka.rawTopic] });
    const stored = await readOffsets(this.redis, cfg, cfg.kafka.rawTopic);
    let lag = 0;
    for (const [partition, { high, low }] of raw) {
      const kafkaCommitted = Number(committed?.partitions.find((p) => p.partition === partition)?.offset ?? -1);
      // Redis is the truth; Kafka's commit trails it by at most a batch.
      const applied = Math.max(kafkaCommitted, stored[partition] ?? -1, low);
      const partitionLag = Math.max(0, high - applied);
      this.metrics.lag.set({ partition: String(partition) }, partitionLag);
      lag += partitionLag;
    }
    const sample: AlertSample = { at: now, rawEnd: sum(raw), dlqEnd: sum(dlq), lag, freshness: await readFreshness(this.redis, cfg) };
    this.samples.push(sample);
    // Keep one sample at or before the window start as the baseline of the rates.
    const from = now - cfg.speed.alerts.windowMs;
    while (this.samples.length > 2 && this.samples[1].at <= from) this.samples.shift();
    const outcomes = evaluateRules(this.samples, cfg.speed.alerts, now);
    await this.publish(outcomes, now);
    return outcomes;
  }

  private async publish(outcomes: RuleOutcome[], now: number): Promise<void> {
    const key = speedKeys(this.cfg).alerts();
    const current = new Map((await readAlerts(this.redis, this.cfg)).map((a) => [a.rule, a]));
    const pipe = this.redis.pipeline();
    for (const o of outcomes) {
      this.metrics.alertFiring.set({ rule: o.rule }, o.firing ? 1 : 0);
      const prev = current.get(o.rule) ?? null;
      if (o.firing) {
        const alert: Alert = { rule: o.rule, since: prev?.since ?? now, value: o.value, threshold: o.threshold, message: o.message };
        pipe.hset(key, o.rule, JSON.stringify(alert));
        if (!prev) this.log.warn({ alert }, `alert firing: ${o.rule}`);
      } else if (prev) {
        pipe.hdel(key, o.rule);
        this.log.info({ rule: o.rule, value: o.value, threshold: o.threshold, firedFor: now - prev.since }, `alert resolved: ${o.rule}`);
      }
    }
    await pipe.exec();
  }
}
