/**
 * The speed layer's Kafka consumer: group cfg.kafka.speedGroup on events.raw,
 * one atomic Redis step per batch (apply.ts), offsets kept in Redis.
 *
 * Redis is the source of truth of what was applied. On every assignment the
 * consumer seeks to the offsets stored there; Kafka commits follow each apply
 * only so that lag is visible to the usual tools. A batch is never resolved
 * before Redis took it: while Redis is unreachable the batch is retried with
 * backoff (heartbeating, so the group keeps the partition) and nothing advances.
 */
import type { Redis } from 'ioredis';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { Config } from '../common/config';
import { EVENT_TYPES, type EventRecord } from '../common/contract';
import type { Logger } from '../common/log';
import { logger } from '../common/log';
import { readOffsets } from '../common/speed-keys';
import { detectBinges, RedisApplier } from './apply';
import { DimensionGuard } from './dimensions';
import { eventIdHash, foldEvents, type Fold } from './fold';
import type { SpeedMetrics } from './metrics';

const KNOWN_TYPES = new Set<string>(EVENT_TYPES);

/**
 * The EventRecord a message carries, or null when it is not one (the collector
 * only writes valid records, but a foreign producer or a corrupted message must
 * not stop the partition).
 */
// Module-level (not per call): this runs once per consumed message.
function nonEmpty(x: unknown): x is string {
  return typeof x === 'string' && x !== '';
}
function optional(x: unknown): x is string | null | undefined {
  return x === undefined || x === null || typeof x === 'string';
}

export function parseRecord(value: Buffer | null): EventRecord | null {
  if (value === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(value.toString('utf8'));
  } catch {
    return null;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const r = v as Record<string, unknown>;
  if (
    !nonEmpty(r.event_id) ||
    !nonEmpty(r.user_id) ||
    typeof r.event_type !== 'string' ||
    !KNOWN_TYPES.has(r.event_type) ||
    !Number.isSafeInteger(r.ts) ||
    !nonEmpty(r.device_type) ||
    !nonEmpty(r.country) ||
    !optional(r.session_id) ||
    !optional(r.content_id)
  ) {
    return null;
  }
  const rec = r as unknown as EventRecord;
  rec.session_id ??= null;
  rec.content_id ??= null;
  return rec;
}

interface Entry {
  offset: number;
  record: EventRecord | null;
  /** eventIdHash(record.event_id), computed once per batch rather than once per step. */
  hash: string;
}

/** A partition whose Redis step keeps failing (what /health reports). */
export interface FailingStep {
  partition: number;
  /** First offset of the step that fails. */
  offset: number;
  failures: number;
  since: number;
  error: string;
}

/** The first index of `entries` (ascending offsets) whose offset is >= `offset`. */
export function firstAtOrAfter(entries: ReadonlyArray<{ offset: number }>, offset: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].offset < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export interface SpeedConsumerOptions {
  cfg: Config;
  kafka: Kafka;
  redis: Redis;
  metrics: SpeedMetrics;
  log?: Logger;
  /**
   * Seek to Redis' offsets on assignment (default). Only tests turn it off, to
   * prove that redelivered batches are skipped by the apply script itself.
   */
  seekOnAssign?: boolean;
}

export class SpeedConsumer {
  private readonly cfg: Config;
  private readonly redis: Redis;
  private readonly metrics: SpeedMetrics;
  private readonly log: Logger;
  private readonly applier: RedisApplier;
  private readonly dimensions: DimensionGuard;
  private readonly consumer: Consumer;
  /** partition → next offset known to be applied in Redis (a hint; the script has the last word). */
  private readonly applied = new Map<number, number>();
  private crashed: Error | null = null;
  /** partition → the step that failed last, while it has not succeeded since. */
  private readonly failing = new Map<number, FailingStep>();
  private stopping = false;
  private readonly seekOnAssign: boolean;

  constructor(opts: SpeedConsumerOptions) {
    this.cfg = opts.cfg;
    this.redis = opts.redis;
    this.metrics = opts.metrics;
    this.log = opts.log ?? logger('speed-consumer');
    this.applier = new RedisApplier(opts.redis, opts.cfg);
    this.dimensions = new DimensionGuard(opts.redis, opts.cfg, this.applier.keys, this.log, (d, n) => this.metrics.dimensionOverflow.inc({ dimension: d }, n));
    this.seekOnAssign = opts.seekOnAssign ?? true;
    this.consumer = opts.kafka.consumer({
      groupId: opts.cfg.kafka.speedGroup,
      maxBytesPerPartition: opts.cfg.speed.maxBytesPerPartition,
      maxBytes: Math.max(opts.cfg.speed.maxBytes, opts.cfg.speed.maxBytesPerPartition),
      sessionTimeout: opts.cfg.speed.sessionTimeoutMs,
      heartbeatInterval: Math.min(3000, Math.floor(opts.cfg.speed.sessionTimeoutMs / 3)),
      retry: { initialRetryTime: 300, retries: 10 },
    });
  }

  /** Health: the consumer has not crashed for good. */
  get healthy(): boolean {
    return this.crashed === null;
  }

  /**
   * Why the consumer is degraded, or null: crashed for good, or a partition whose
   * step failed cfg.speed.degradedAfterFailures times in a row (retrying, nothing applied meanwhile).
   */
  degraded(): { reason: string; failing: FailingStep[] } | null {
    const failing = [...this.failing.values()].filter((f) => f.failures >= this.cfg.speed.degradedAfterFailures);
    if (this.crashed) return { reason: `consumer crashed and will not restart: ${this.crashed.message}`, failing };
    if (failing.length === 0) return null;
    const worst = failing.reduce((a, b) => (b.failures > a.failures ? b : a));
    return {
      reason: `redis step failing repeatedly: partition ${worst.partition} at offset ${worst.offset}, ${worst.failures} failures in a row since ${new Date(worst.since).toISOString()} (${worst.error})`,
      failing,
    };
  }

  async start(): Promise<void> {
    const { consumer, cfg } = this;
    const topic = cfg.kafka.rawTopic;
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      const partitions = e.payload.memberAssignment[topic] ?? [];
      this.log.info({ partitions, groupId: e.payload.groupId }, 'assigned partitions');
      // A partition now consumed elsewhere is no longer this member's failure to report.
      for (const p of this.failing.keys()) if (!partitions.includes(p)) this.failing.delete(p);
      if (this.seekOnAssign) void this.seekToStoredOffsets(partitions);
    });
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart) {
        this.log.warn({ err: e.payload.error?.message }, 'consumer crashed; kafkajs restarts it');
      } else {
        this.crashed = e.payload.error;
        this.log.error({ err: e.payload.error?.message }, 'consumer crashed and will not restart');
      }
    });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: cfg.speed.fromBeginning });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: cfg.speed.partitionsConsumedConcurrently,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.disconnect();
  }

  /** Seek to Redis' offsets; runs after consumer.run, on every (re)assignment. */
  private async seekToStoredOffsets(partitions: number[]): Promise<void> {
    const topic = this.cfg.kafka.rawTopic;
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const stored = await readOffsets(this.redis, this.cfg, topic);
        for (const partition of partitions) {
          const offset = stored[partition];
          if (offset === undefined) {
            this.applied.delete(partition);
            continue;
          }
          this.applied.set(partition, offset);
          this.consumer.seek({ topic, partition, offset: String(offset) });
        }
        this.log.info({ stored, partitions }, 'seeked to the offsets stored in Redis');
        return;
      } catch (err) {
        // Not fatal for exactness (the apply script checks the stored offset); retried to avoid re-reading.
        this.log.warn({ err: (err as Error).message, attempt }, 'could not read stored offsets; retrying');
        await sleep(Math.min(200 * 2 ** attempt, this.cfg.speed.maxRetryBackoffMs));
      }
    }
  }

  private async handleBatch(p: EachBatchPayload): Promise<void> {
    const { batch } = p;
    if (batch.isEmpty()) return;
    const { topic, partition } = batch;
    this.metrics.consumed.inc(batch.messages.length);
    const entries: Entry[] = batch.messages.map((m) => {
      const record = parseRecord(m.value);
      if (record === null) {
        this.log.warn({ topic, partition, offset: m.offset, bytes: m.value?.length ?? 0 }, 'skipping a message that is not an EventRecord');
      }
      return { offset: Number(m.offset), record, hash: record === null ? '' : eventIdHash(record.event_id) };
    });
    const end = entries[entries.length - 1].offset + 1;
    const crossBatchDuplicates = new Set<string>();
    let backoff = 100;
    let failures = 0;
    let commitAt = end;

    // One or more bounded steps, each over [its first offset, its next offset) with its own offset guard.
    for (;;) {
      if (!p.isRunning() || p.isStale()) return; // not resolved: redelivered or re-seeked, never dropped
      const known = this.applied.get(partition) ?? -1;
      if (known >= end) {
        commitAt = Math.max(commitAt, known);
        if (known > end) this.consumer.seek({ topic, partition, offset: String(known) });
        break;
      }
      const pending = entries.slice(firstAtOrAfter(entries, known));
      const started = process.hrtime.bigint();
      let step: Awaited<ReturnType<SpeedConsumer['applyStep']>>;
      try {
        // A step that times out may still run later: harmless, the offset guard makes the retry a skip.
        step = await withTimeout(this.applyStep(topic, partition, pending, end, crossBatchDuplicates), this.cfg.speed.redisTimeoutMs);
      } catch (err) {
        failures += 1;
        const message = (err as Error).message;
        const prev = this.failing.get(partition);
        const offset = pending[0].offset;
        this.failing.set(partition, { partition, offset, failures: prev?.offset === offset ? prev.failures + 1 : 1, since: prev?.offset === offset ? prev.since : Date.now(), error: message });
        this.metrics.applyFailures.inc();
        this.metrics.batches.inc({ result: 'failed' });
        this.log.error({ err: message, topic, partition, firstOffset: offset, failures, retryInMs: backoff }, 'redis step failed; retrying it');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, this.cfg.speed.maxRetryBackoffMs);
        await p.heartbeat();
        continue;
      }
      const { outcome } = step;
      this.failing.delete(partition);
      this.metrics.batches.inc({ result: outcome.status });
      if (outcome.status === 'duplicates') {
        for (const h of outcome.hashes) crossBatchDuplicates.add(h);
        continue;
      }
      if (outcome.status === 'partial' || outcome.status === 'skipped') {
        this.applied.set(partition, outcome.stored);
        continue;
      }
      this.applied.set(partition, step.nextOffset);
      this.observeApplied(step, started);
      if (failures > 0) this.log.info({ topic, partition, failures }, 'redis step succeeded after retries');
      failures = 0;
      backoff = 100;
      if (step.nextOffset < end) {
        // Progress inside a large batch: what is applied is resolved, and the group hears from us.
        p.resolveOffset(String(step.nextOffset - 1));
        await p.heartbeat();
      }
    }
    p.resolveOffset(String(end - 1));
    this.metrics.lag.set({ partition: String(partition) }, Number(batch.offsetLag()));
    try {
      await p.commitOffsetsIfNecessary({ topics: [{ topic, partitions: [{ partition, offset: String(commitAt) }] }] });
    } catch (err) {
      // Redis holds the truth; a missed commit only makes Kafka's lag look larger until the next one.
      this.log.warn({ err: (err as Error).message, topic, partition }, 'kafka offset commit failed');
    }
    await p.heartbeat();
  }

  /**
   * Fold as many of `pending` as fit in one bounded step and apply them. The step covers
   * [pending[0].offset, nextOffset): every message in it, parsed or not, is accounted by it.
   */
  private async applyStep(topic: string, partition: number, pending: Entry[], end: number, crossBatchDuplicates: Set<string>) {
    const now = Date.now();
    const inputs: Array<{ record: EventRecord; hash: string }> = [];
    const at: number[] = []; // index in pending of each input
    for (let i = 0; i < pending.length; i++) {
      const e = pending[i];
      if (e.record === null || crossBatchDuplicates.has(e.hash)) continue;
      inputs.push({ record: e.record, hash: e.hash });
      at.push(i);
    }
    // Before the fold: a device_type over the day's bound becomes `other`, so it creates no keys.
    await this.dimensions.bound(inputs.map((i) => i.record));
    const { speed } = this.cfg;
    const fold = foldEvents(inputs, {
      now,
      secondRetentionMs: speed.secondRetentionMs,
      retentionMs: speed.retentionMs,
      limits: { maxArgs: speed.stepMaxArgs, maxKeys: speed.stepMaxKeys, maxBytes: speed.stepMaxBytes },
      keyPrefixBytes: Buffer.byteLength(this.cfg.redis.keyPrefix),
    });
    // The step ends right before the first input it could not take (or with the batch).
    const cut = fold.consumed < inputs.length ? at[fold.consumed] : pending.length;
    const nextOffset = cut < pending.length ? pending[cut].offset : end;
    let unparseable = 0;
    let dupCount = 0;
    let oldestReceived = Infinity;
    for (let i = 0; i < cut; i++) {
      const r = pending[i].record;
      if (r === null) unparseable += 1;
      else if (crossBatchDuplicates.has(pending[i].hash)) dupCount += 1;
      else if (typeof r.received_at === 'number' && r.received_at < oldestReceived) oldestReceived = r.received_at;
    }
    const binges = await detectBinges(this.redis, this.cfg, this.applier.keys, fold, now);
    const outcome = await this.applier.apply({
      topic,
      partition,
      firstOffset: pending[0].offset,
      nextOffset,
      now,
      fold,
      binges,
      unparseable,
      crossBatchDuplicates: dupCount,
      freshnessMs: Number.isFinite(oldestReceived) ? Math.max(0, now - oldestReceived) : null,
    });
    return { outcome, fold, nextOffset, entries: pending.slice(0, cut), dupCount: dupCount + fold.duplicates, size: this.applier.lastStep };
  }

  private observeApplied(step: { fold: Fold; dupCount: number; entries: Entry[]; size: { keys: number; args: number; bytes: number } }, started: bigint): void {
    const { fold, dupCount, entries, size } = step;
    const m = this.metrics;
    m.applySeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    m.stepArgs.observe(size.args);
    m.stepKeys.observe(size.keys);
    m.stepBytes.observe(size.bytes);
    m.stepEvents.observe(entries.length);
    m.applied.inc(fold.events);
    if (dupCount > 0) m.duplicates.inc(dupCount);
    if (fold.lateMinute > 0) m.late.inc({ family: 'minute' }, fold.lateMinute);
    if (fold.lateSecond > 0) m.late.inc({ family: 'second' }, fold.lateSecond);
    const now = Date.now();
    let bad = 0;
    for (const e of entries) {
      if (e.record === null) bad += 1;
      else if (typeof e.record.received_at === 'number') m.freshness.observe(Math.max(0, now - e.record.received_at) / 1000);
    }
    if (bad > 0) m.unparseable.inc(bad);
  }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis step not answered within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
