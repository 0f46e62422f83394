/**
 * The speed layer's Kafka consumer: group cfg.kafka.speedGroup on events.raw,
 * one atomic Redis step per batch (apply.ts), offsets kept in Redis.
 *
 * Redis is the source of truth of what was applied. On every assignment the
 * consumer seeks to the offsets stored there; Kafka commits follow each apply
 * only so that lag is visible to the usual tools. A batch is never resolved
 * before Redis took it: while Redis is unreachable the batch is retried with
 * backoff (heartbeating, so the group keeps the partition) and nothing advances.
 *
 * Redis can also go back in time: it persists with `appendfsync everysec`, so a
 * crash loses up to a second of applied steps, and a restart from an older AOF
 * (or an empty one) loses more. The apply script then finds its stored offset
 * below the step ('gap') or none at all ('missing') and writes nothing; the
 * consumer re-reads the partition from where Redis is (redisBehind).
 */
import type { Redis } from 'ioredis';
import type { Admin, Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { Config } from '../common/config';
import { decodeRecord, RejectedRecord, type EventRecord } from '../common/contract';
import type { Logger } from '../common/log';
import { logger } from '../common/log';
import { readAlert, readOffsets, readRebuildTargets, type Alert } from '../common/speed-keys';
import { detectBinges, RedisApplier } from './apply';
import { DimensionGuard } from './dimensions';
import { eventIdHash, foldEvents, isLate, type Fold } from './fold';
import type { SpeedMetrics } from './metrics';

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
  /**
   * Compare Redis' offsets with the applied ones whenever Redis (re)connects (default). Only tests turn it
   * off, to prove that the apply script's gap/missing answers alone bring back what Redis lost.
   */
  checkOnReconnect?: boolean;
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
  /** When the last "dedupe set full" warning was logged (one a minute at most). */
  private lastFullWarning = 0;
  private readonly seekOnAssign: boolean;
  private readonly checkOnReconnect: boolean;
  private readonly kafka: Kafka;
  private admin: Promise<Admin> | null = null;
  /** partition → what its next step may apply over: a missing offset ('init') or a stored one below it. */
  private readonly allow = new Map<number, { first: number; accept: 'init' | number }>();
  /** partition → the offset a rebuild (Redis lost the partition) must reach before its alert resolves. */
  private readonly rebuilding = new Map<number, number>();
  /** partition → the stored offset of the last gap counted (a stale batch re-reporting it is not a new one). */
  private readonly lastGap = new Map<number, number>();
  /** Partitions of the last assignment. */
  private assigned: number[] = [];

  constructor(opts: SpeedConsumerOptions) {
    this.cfg = opts.cfg;
    this.redis = opts.redis;
    this.metrics = opts.metrics;
    this.log = opts.log ?? logger('speed-consumer');
    this.applier = new RedisApplier(opts.redis, opts.cfg);
    this.dimensions = new DimensionGuard(opts.redis, opts.cfg, this.applier.keys, this.log, (d, n) => this.metrics.dimensionOverflow.inc({ dimension: d }, n));
    this.seekOnAssign = opts.seekOnAssign ?? true;
    this.kafka = opts.kafka;
    this.checkOnReconnect = opts.checkOnReconnect ?? true;
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
      this.assigned = partitions;
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
    // A partition with no new messages would never reach the apply script: check what Redis came back with.
    if (this.checkOnReconnect) this.redis.on('ready', () => void this.checkStoredOffsets());
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
    const admin = this.admin;
    this.admin = null;
    if (admin) await admin.then((a) => a.disconnect()).catch(() => undefined);
  }

  /** Seek to Redis' offsets; runs after consumer.run, on every (re)assignment. */
  private async seekToStoredOffsets(partitions: number[]): Promise<void> {
    const topic = this.cfg.kafka.rawTopic;
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const stored = await readOffsets(this.redis, this.cfg, topic);
        // A rebuild another member (or an earlier run) started: this member finishes it and resolves its alert.
        const targets = await readRebuildTargets(this.redis, this.cfg, topic);
        this.rebuilding.clear();
        for (const [p, target] of Object.entries(targets)) if (partitions.includes(Number(p))) this.rebuilding.set(Number(p), target);
        // Its member stopped between reaching the target and resolving: resolve it now.
        for (const [p, target] of this.rebuilding) if ((stored[p] ?? -1) >= target) await this.rebuilt(topic, p, target);
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

  /**
   * After Redis (re)connected: every assigned partition whose stored offset is now behind what this member
   * saw applied (or gone) is re-read from Redis' offset, or rebuilt, as the apply script would have it.
   */
  private async checkStoredOffsets(): Promise<void> {
    const topic = this.cfg.kafka.rawTopic;
    for (let attempt = 0; !this.stopping; attempt++) {
      if (!this.assigned.some((p) => this.applied.has(p))) return; // nothing applied yet: nothing to lose
      try {
        const stored = await readOffsets(this.redis, this.cfg, topic);
        for (const partition of this.assigned) {
          const seen = this.applied.get(partition);
          const s = stored[partition];
          if (seen === undefined || (s !== undefined && s >= seen)) continue;
          const resumeAt = await this.redisBehind(topic, partition, seen, s ?? null);
          if (resumeAt === null) continue;
          if (s !== undefined) this.applied.set(partition, s);
          else this.applied.delete(partition);
          this.consumer.seek({ topic, partition, offset: String(resumeAt) });
        }
        return;
      } catch (err) {
        // A step would find the same (on a partition that gets messages): this check only spares waiting for one.
        this.log.warn({ err: (err as Error).message, attempt }, 'could not compare the offsets in Redis with the applied ones; retrying');
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
      // The collector only writes valid records, but a foreign producer or a corrupted message must not stop the partition.
      const decoded = decodeRecord(m.value);
      if (decoded instanceof RejectedRecord) {
        this.log.warn({ topic, partition, offset: m.offset, bytes: m.value?.length ?? 0, reason: decoded.reason, detail: decoded.detail }, 'skipping a message that is not an EventRecord');
        return { offset: Number(m.offset), record: null, hash: '' };
      }
      return { offset: Number(m.offset), record: decoded, hash: eventIdHash(decoded.event_id) };
    });
    const end = entries[entries.length - 1].offset + 1;
    const crossBatchDuplicates = new Set<string>();
    let checkedSeen = false;
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
        if (!checkedSeen) {
          for (const h of await withTimeout(this.seenBefore(pending), this.cfg.speed.redisTimeoutMs)) crossBatchDuplicates.add(h);
          checkedSeen = true;
        }
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
      if (outcome.status === 'stale') {
        // Another writer (erasure, another partition's step for the same user) moved a user's hash after the read.
        this.log.debug({ topic, partition, firstOffset: pending[0].offset }, 'a user feature hash moved since it was read; computing the step again');
        continue;
      }
      if (outcome.status === 'partial' || outcome.status === 'skipped') {
        this.applied.set(partition, outcome.stored);
        continue;
      }
      if (outcome.status === 'gap' || outcome.status === 'missing') {
        let resumeAt: number | null;
        try {
          resumeAt = await this.redisBehind(topic, partition, pending[0].offset, outcome.status === 'gap' ? outcome.stored : null);
        } catch (err) {
          this.log.warn({ err: (err as Error).message, topic, partition }, 'could not ask Kafka where the partition starts; retrying');
          await sleep(backoff);
          backoff = Math.min(backoff * 2, this.cfg.speed.maxRetryBackoffMs);
          await p.heartbeat();
          continue;
        }
        if (resumeAt === null) continue; // the step may apply as it is (this.allow)
        if (outcome.status === 'gap') this.applied.set(partition, outcome.stored);
        else this.applied.delete(partition);
        this.consumer.seek({ topic, partition, offset: String(resumeAt) });
        return; // not resolved: the partition is re-read from resumeAt
      }
      this.applied.set(partition, step.nextOffset);
      this.allow.delete(partition);
      this.lastGap.delete(partition);
      const target = this.rebuilding.get(partition);
      if (target !== undefined && step.nextOffset >= target) await this.rebuilt(topic, partition, target);
      this.observeApplied(step, started);
      if (failures > 0) this.log.info({ topic, partition, failures }, 'redis step succeeded after retries');
      failures = 0;
      backoff = 100;
      if (step.nextOffset < end) {
        // The ids this step applied are duplicates for the batch's later steps: skipped there, not refused by their check.
        for (const hashes of step.fold.dedupe.values()) for (const h of hashes) crossBatchDuplicates.add(h);
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
   * The hashes of the batch already applied by earlier batches (what the step's own check would refuse), asked
   * once per batch before the fold. Events the fold would leave out as late are not asked about: they stay late.
   */
  private seenBefore(pending: Entry[]): Promise<Set<string>> {
    const now = Date.now();
    const inputs: Array<{ record: EventRecord; hash: string }> = [];
    for (const e of pending) {
      if (e.record !== null && !isLate(e.record.ts, 'minute', this.cfg.speed.retentionMs, now)) inputs.push({ record: e.record, hash: e.hash });
    }
    return this.applier.seenBefore(inputs);
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
      dedupeEpochMs: speed.dedupeWindowMs,
      userFeatures: speed.userFeatures,
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
      else if (r.received_at > 0 && r.received_at < oldestReceived) oldestReceived = r.received_at; // 0: not known (decodeRecord)
    }
    // Both reads in one wait: the binge check's remembered completes, and each user's feature fields the step advances.
    const [binges, users] = await Promise.all([detectBinges(this.redis, this.cfg, fold, now), this.applier.readUsers(fold)]);
    const allowed = this.allow.get(partition);
    const outcome = await this.applier.apply({
      topic,
      partition,
      firstOffset: pending[0].offset,
      nextOffset,
      accept: allowed?.first === pending[0].offset ? allowed.accept : undefined,
      now,
      fold,
      binges,
      unparseable,
      crossBatchDuplicates: dupCount,
      freshnessMs: Number.isFinite(oldestReceived) ? Math.max(0, now - oldestReceived) : null,
      users,
    });
    const unremembered = outcome.status === 'applied' ? this.applier.lastUnremembered : 0;
    return { outcome, fold, nextOffset, entries: pending.slice(0, cut), dupCount: dupCount + fold.duplicates, size: this.applier.lastStep, unremembered };
  }

  /**
   * Redis holds less than this consumer saw applied: its offset for the partition is below the step
   * (`stored`, a gap) or absent (`stored` null). Returns the offset to re-read the partition from, or null
   * when the step may apply as it is (this.allow is set for it).
   *
   * - A gap: the steps in [stored, first) were lost (the AOF's last second, an older AOF). Re-read from
   *   stored; the steps after it apply again, exactly once, since Redis has none of their effects. If Kafka
   *   no longer holds [stored, first) (retention), they are gone for good: counted, logged, applied over.
   * - Missing, for a partition the group consumed before (Kafka has its commits, or this process applied
   *   to it): Redis lost everything about it. Rebuild it from the earliest offset Kafka holds: the steps are
   *   exactly-once, so a replay from there is exact, and events older than the retention stay out as late.
   *   An alert fires until the rebuild is back where the partition was.
   * - Missing otherwise: a partition this group starts on (at its beginning, or where
   *   SPEED_FROM_BEGINNING=false put it): the step may set the offset.
   */
  private async redisBehind(topic: string, partition: number, first: number, stored: number | null): Promise<number | null> {
    const admin = await this.adminClient();
    const offsets = await admin.fetchTopicOffsets(topic);
    const low = Number(offsets.find((o) => o.partition === partition)?.low ?? 0);
    if (stored !== null) {
      if (this.lastGap.get(partition) !== stored) {
        this.lastGap.set(partition, stored);
        this.metrics.redisGaps.inc();
        this.log.warn({ topic, partition, stored, first, messages: first - stored }, 'redis lost applied steps (its stored offset is behind this consumer): re-reading from the stored offset');
      }
      if (first > low) return Math.max(stored, low);
      this.metrics.lostForGood.inc(first - stored);
      this.log.error({ topic, partition, stored, first, low }, 'redis lost applied steps that Kafka no longer holds (retention): they are missing from the speed views for good');
      this.allow.set(partition, { first, accept: stored });
      return null;
    }
    if (first <= low) {
      this.allow.set(partition, { first, accept: 'init' });
      return null;
    }
    const [group] = await admin.fetchOffsets({ groupId: this.cfg.kafka.speedGroup, topics: [topic] });
    const committed = Number(group?.partitions.find((o) => o.partition === partition)?.offset ?? -1);
    const seen = this.applied.get(partition) ?? -1;
    if (committed < 0 && seen < 0) {
      this.log.info({ topic, partition, first, low }, 'starting a partition this group never consumed where Kafka placed it');
      this.allow.set(partition, { first, accept: 'init' });
      return null;
    }
    const target = Math.max(committed, seen, first);
    if (this.rebuilding.get(partition) !== target) {
      this.metrics.redisRebuilds.inc();
      this.log.error({ topic, partition, committed, seen, low, target }, 'redis has no offset for a partition this group consumed (it lost its data): rebuilding the partition from the earliest offset Kafka holds');
      await this.raiseRebuild(topic, partition, target);
    }
    return low;
  }

  private adminClient(): Promise<Admin> {
    if (!this.admin) {
      const admin = this.kafka.admin();
      this.admin = admin.connect().then(() => admin);
      // A failed connect is retried by the next call, not cached.
      this.admin.catch(() => (this.admin = null));
    }
    return this.admin;
  }

  /** Fire redis_data_lost (kept firing by the other partitions' rebuilds) and record the partition's target. */
  private async raiseRebuild(topic: string, partition: number, target: number): Promise<void> {
    const keys = this.applier.keys;
    this.rebuilding.set(partition, target);
    const [, prev] = await Promise.all([this.redis.hset(keys.rebuild(topic), String(partition), String(target)), readAlert(this.redis, this.cfg, 'redis_data_lost')]);
    const partitions = await this.redis.hlen(keys.rebuild(topic));
    const alert: Alert = {
      rule: 'redis_data_lost',
      since: prev?.since ?? Date.now(),
      value: partitions,
      threshold: 0,
      message: `Redis lost the speed layer's data for ${partitions} partition(s) of ${topic}: rebuilding them from Kafka; speed buckets are incomplete until then`,
    };
    await this.redis.hset(keys.alerts(), 'redis_data_lost', JSON.stringify(alert));
  }

  /** The partition's rebuild reached where it was: drop its target, and resolve the alert with the last one. */
  private async rebuilt(topic: string, partition: number, target: number): Promise<void> {
    const keys = this.applier.keys;
    this.rebuilding.delete(partition);
    try {
      const left = (await this.redis.eval(RESOLVE_REBUILD, 2, keys.rebuild(topic), keys.alerts(), String(partition))) as number;
      this.log.warn({ topic, partition, target, partitionsLeft: left }, 'partition rebuilt from Kafka after redis lost it');
    } catch (err) {
      // Only the alert is late: the next assignment reloads the targets and resolves it.
      this.log.warn({ err: (err as Error).message, topic, partition }, 'could not resolve the rebuild alert');
    }
  }

  private observeApplied(step: { fold: Fold; dupCount: number; entries: Entry[]; size: { keys: number; args: number; bytes: number }; unremembered: number }, started: bigint): void {
    const { fold, dupCount, entries, size, unremembered } = step;
    const m = this.metrics;
    if (unremembered > 0) {
      m.dedupeUnremembered.inc(unremembered);
      // Once a minute at most: a full set stays full until its epoch ends.
      if (Date.now() - this.lastFullWarning >= 60_000) {
        this.lastFullWarning = Date.now();
        this.log.warn({ unremembered, maxIds: this.cfg.speed.dedupeMaxIds }, 'dedupe set full (SPEED_DEDUPE_MAX_IDS): events are counted but not remembered, a later copy of them counts again');
      }
    }
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
      else if (e.record.received_at > 0) m.freshness.observe(Math.max(0, now - e.record.received_at) / 1000);
    }
    if (bad > 0) m.unparseable.inc(bad);
  }
}

/** KEYS: rebuild targets, firing alerts. ARGV: partition. Returns how many partitions are still rebuilding. */
const RESOLVE_REBUILD = `
redis.call('HDEL', KEYS[1], ARGV[1])
local left = redis.call('HLEN', KEYS[1])
if left == 0 then redis.call('HDEL', KEYS[2], 'redis_data_lost') end
return left
`;

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
