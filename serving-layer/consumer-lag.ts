/**
 * Consumer-lag alerts raised by the serving layer, for the speed group and the
 * lake group on events.raw: the group's committed offsets against the topic's
 * end offsets, read with a Kafka admin client of its own.
 *
 * Why here: the speed layer's own lag rule lives in the speed-layer process,
 * so a speed layer that crash-loops (or never starts) cannot say it is behind.
 * The serving layer is up whenever anyone looks at /v1/alerts.
 *
 * Rules, per group: `<role>_consumer_lag` while more messages than the
 * threshold wait; `<role>_consumer_stalled` while messages wait and the
 * group's committed offsets have not moved for longer than the stall limit;
 * `consumer_lag_unknown` while Kafka cannot be asked (never a silent "no alert").
 * Readings are cached a few seconds and bounded in time, so /v1/alerts stays
 * cheap and answers even with Kafka down.
 */
import type { Admin } from 'kafkajs';
import { kafkaClient } from '../common/clients';
import type { Config } from '../common/config';
import { groupLag } from '../common/topics';
import { logger, type Logger } from '../common/log';

export interface ServingAlert {
  rule: string;
  layer: 'serving';
  since: number;
  value: number;
  threshold: number;
  message: string;
}

export type ConsumerRole = 'speed' | 'lake';

export interface GroupLag {
  role: ConsumerRole;
  groupId: string;
  /** Messages retained in the topic and not yet committed by the group. */
  lag: number;
  /** Sum of the group's committed offsets (progress). */
  committed: number;
}

export interface LagThresholds {
  maxLag: number;
  maxStallMs: number;
}

interface GroupState {
  /** When the current lag alert started firing. */
  lagSince: number | null;
  /** Last time the committed offsets moved (or nothing was waiting). */
  progressAt: number;
  committed: number;
}

/**
 * The alerts for one reading. `state` carries what earlier readings saw (first firing
 * time, last progress) and is updated in place.
 */
export function lagAlerts(readings: readonly GroupLag[], thresholds: Record<ConsumerRole, LagThresholds>, topic: string, state: Map<string, GroupState>, now: number): ServingAlert[] {
  const out: ServingAlert[] = [];
  for (const g of readings) {
    const t = thresholds[g.role];
    let s = state.get(g.groupId);
    if (!s) state.set(g.groupId, (s = { lagSince: null, progressAt: now, committed: g.committed }));
    if (g.committed !== s.committed || g.lag === 0) {
      s.committed = g.committed;
      s.progressAt = now;
    }
    if (g.lag > t.maxLag) {
      s.lagSince ??= now;
      out.push({
        rule: `${g.role}_consumer_lag`,
        layer: 'serving',
        since: s.lagSince,
        value: g.lag,
        threshold: t.maxLag,
        message: `${g.lag} messages of ${topic} not yet consumed by group ${g.groupId}`,
      });
    } else {
      s.lagSince = null;
    }
    const stalledMs = now - s.progressAt;
    if (g.lag > 0 && stalledMs > t.maxStallMs) {
      out.push({
        rule: `${g.role}_consumer_stalled`,
        layer: 'serving',
        since: s.progressAt + t.maxStallMs,
        value: stalledMs,
        threshold: t.maxStallMs,
        message: `group ${g.groupId} has not committed progress on ${topic} for ${Math.round(stalledMs / 1000)} s while ${g.lag} messages wait`,
      });
    }
  }
  return out;
}

export interface ConsumerLagOptions {
  /** An admin client to use (not disconnected by close); by default one of its own. */
  admin?: Admin;
  /** Readings younger than this are reused (default 5 s). */
  cacheMs?: number;
  /** A reading that takes longer counts as failed (default 3 s). */
  timeoutMs?: number;
  log?: Logger;
}

export class ConsumerLagMonitor {
  private readonly admin: Admin;
  private readonly ownAdmin: boolean;
  private connected: Promise<void> | null = null;
  private readonly cacheMs: number;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private readonly state = new Map<string, GroupState>();
  private cached: { at: number; alerts: ServingAlert[] } | null = null;
  private inFlight: Promise<ServingAlert[]> | null = null;
  private failingSince: number | null = null;

  constructor(
    private readonly cfg: Config,
    opts: ConsumerLagOptions = {},
  ) {
    this.ownAdmin = opts.admin === undefined;
    // Probe settings: no retries of its own (the next reading is the retry) and no log noise while Kafka is down.
    this.admin = opts.admin ?? kafkaClient(cfg, `${cfg.kafka.clientId}-serving-lag`, { probe: true }).admin();
    this.cacheMs = opts.cacheMs ?? 5000;
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.log = opts.log ?? logger('consumer-lag');
  }

  /** Lag of the speed and lake groups on the raw topic, read now. */
  async read(): Promise<GroupLag[]> {
    if (this.ownAdmin) {
      this.connected ??= this.admin.connect().catch((err: unknown) => {
        this.connected = null;
        throw err;
      });
      await this.connected;
    }
    const topic = this.cfg.kafka.rawTopic;
    const ends = (await this.admin.fetchTopicOffsets(topic)).map((r) => ({ partition: r.partition, high: Number(r.high), low: Number(r.low) }));
    const groups: Array<[ConsumerRole, string]> = [
      ['speed', this.cfg.kafka.speedGroup],
      ['lake', this.cfg.kafka.lakeGroup],
    ];
    return Promise.all(
      groups.map(async ([role, groupId]) => {
        const [t] = await this.admin.fetchOffsets({ groupId, topics: [topic] });
        const committed = new Map((t?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
        return { role, groupId, ...groupLag(ends, committed) };
      }),
    );
  }

  /** The alerts firing now (cached for a few seconds). */
  alerts(now = Date.now()): Promise<ServingAlert[]> {
    if (this.cached && now - this.cached.at < this.cacheMs) return Promise.resolve(this.cached.alerts);
    this.inFlight ??= this.refresh(now).finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async refresh(now: number): Promise<ServingAlert[]> {
    const { cfg } = this;
    let alerts: ServingAlert[];
    try {
      const readings = await withTimeout(this.read(), this.timeoutMs);
      this.failingSince = null;
      alerts = lagAlerts(
        readings,
        { speed: { maxLag: cfg.speed.alerts.maxLag, maxStallMs: cfg.speed.alerts.maxStallMs }, lake: { maxLag: cfg.lake.alertMaxLag, maxStallMs: cfg.lake.alertMaxStallMs } },
        cfg.kafka.rawTopic,
        this.state,
        now,
      );
    } catch (err) {
      const message = (err as Error).message;
      if (this.failingSince === null) this.log.warn({ err: message }, 'cannot read consumer offsets from Kafka');
      this.failingSince ??= now;
      // The reply is read by API clients: Kafka's own message stays in the log (warned above).
      alerts = [{ rule: 'consumer_lag_unknown', layer: 'serving', since: this.failingSince, value: 1, threshold: 0, message: 'cannot read consumer offsets from Kafka (the serving log has the cause)' }];
    }
    this.cached = { at: now, alerts };
    return alerts;
  }

  async close(): Promise<void> {
    if (this.ownAdmin && this.connected) await this.admin.disconnect().catch(() => {});
  }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  // A reading that lost the race must not surface later as an unhandled rejection.
  work.catch(() => {});
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
