/**
 * The lake writer: consumer group `lake` on events.raw (and events.dlq) →
 * zstd Parquet on S3 by event time, the master dataset of the batch layer.
 *
 * Guarantees:
 * - nothing is lost: a partition's offset is committed only once every record
 *   below it is in an uploaded object (see PartitionState.committable);
 * - a retry rewrites the same object: keys derive from (period, partition,
 *   first offset, last offset);
 * - not exactly-once: after a crash the redelivered range may be cut into files
 *   at other boundaries than before, so an event can land in two objects. The
 *   raw lake is "as received, duplicates included"; the batch layer
 *   de-duplicates by event_id.
 * - late data (its hour already over at write time) lands in its own hour and
 *   marks that hour and its day dirty, after the object is uploaded and before
 *   the offsets are committed, so a marker is never missing for committed data.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import type { DirtyMarker } from '../../common/lake';
import { logger } from '../../common/log';
import { putDirtyMarker, uploadFile } from '../../common/lake-io';
import { PartitionState, filesToRelieve, isHourClosed, objectKey, passedFiles, shouldRoll, type FileBuffer, type RollPolicy, type StreamKind } from './buffers';
import { decodeMessage, type Decoded } from './decode';
import { lakeWriterMetrics, type LakeWriterMetrics } from './metrics';
import { writeParquetLines } from './parquet';

export { parseDeadLetter } from './decode';

export interface LakeWriterStatus {
  /** Records read from Kafka (all topics) since start. */
  consumed: number;
  /** Records in open files. */
  buffered: number;
  /** Files being written or uploaded. */
  uploading: number;
  objectsUploaded: number;
  /** Upload attempts that failed since the last success (S3 trouble shows here first). */
  failingUploads: number;
  /** Committed offset (exclusive) per `topic:partition`. */
  committed: Record<string, string>;
}

export interface LakeWriterOptions {
  s3?: S3Client;
  /** Clock, for tests of late data. */
  now?: () => number;
}

const log = logger('lake-writer');
const STOP_TIMEOUT_MS = 60_000;
/** With the retry backoff (0.25 s doubling, capped at 30 s), ten failures in a row is about 90 s without a successful upload. */
const UNHEALTHY_AFTER_FAILURES = 10;
/** While catching up, consumption waits once this many files per upload slot are uploading or queued for one. */
const MAX_QUEUED_UPLOADS_PER_SLOT = 4;

/** At most `n` objects are encoded and uploaded at once; the rest wait their turn. */
function semaphore(n: number): { acquire(): Promise<void>; release(): void } {
  let free = n;
  const waiting: (() => void)[] = [];
  return {
    acquire: () =>
      free > 0
        ? ((free -= 1), Promise.resolve())
        : new Promise<void>((resolve) => waiting.push(resolve)),
    release: () => {
      const next = waiting.shift();
      if (next) next();
      else free += 1;
    },
  };
}

/** A writer killed with SIGKILL leaves its scratch dir behind; remove those whose process is gone. */
async function removeStaleScratch(root: string): Promise<void> {
  const entries = await fsp.readdir(root).catch(() => [] as string[]);
  for (const name of entries) {
    const m = /^lake-writer-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') await fsp.rm(path.join(root, name), { recursive: true, force: true });
    }
  }
}

/**
 * Consumer group cfg.kafka.lakeGroup on events.raw and events.dlq. Each record goes
 * consume batch → decode → buffer (a file per partition and period) → roll → upload →
 * commit; the ticker rolls files by age and commits what became safe.
 */
export class LakeWriter {
  readonly registry = new Registry();
  private readonly m: LakeWriterMetrics;
  private readonly now: () => number;
  private readonly s3: S3Client;
  private readonly policy: RollPolicy;
  private readonly consumer: Consumer;
  private readonly states = new Map<string, PartitionState>();
  private readonly uploads = new Set<Promise<void>>();
  private readonly slots: { acquire(): Promise<void>; release(): void };
  /** Woken when a file is uploaded: waking on upload tasks would also wait for their commits' turn. */
  private readonly uploadedWaiters: Array<() => void> = [];
  private scratch = '';
  /** Records consumed since lake_writer_records_total was last advanced: a labelled inc per record cost more than the rest of its bookkeeping. */
  private readonly uncounted: Record<StreamKind, number> = { raw: 0, dlq: 0, rawUnreadable: 0 };
  private consumed = 0;
  private objectsUploaded = 0;
  private failingUploads = 0;
  private stopping = false;
  /** Set when a stop has waited STOP_TIMEOUT_MS: failing uploads give up instead of retrying. */
  private abandoned = false;
  private commitChain: Promise<void> = Promise.resolve();
  private currentBatch: Promise<void> | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private stopped: Promise<void> | null = null;

  constructor(
    private readonly cfg: Config,
    opts: LakeWriterOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.s3 = opts.s3 ?? s3Client(cfg);
    this.policy = { rollBytes: cfg.lake.rollBytes, rollAgeMs: cfg.lake.rollAgeSec * 1000 };
    this.slots = semaphore(cfg.lake.uploadConcurrency);
    collectDefaultMetrics({ register: this.registry, prefix: 'lake_writer_' });
    this.m = lakeWriterMetrics(this.registry);
    this.consumer = kafkaClient(cfg, `${cfg.kafka.clientId}-lake-writer`).consumer({
      groupId: cfg.kafka.lakeGroup,
      sessionTimeout: cfg.lake.sessionTimeoutMs,
      heartbeatInterval: Math.min(3_000, Math.floor(cfg.lake.sessionTimeoutMs / 3)),
      // Bounds how long a stop waits for an idle fetch to return.
      maxWaitTimeInMs: 1_000,
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      // A new generation re-reads every assigned partition from its committed offset.
      let dropped = 0;
      for (const s of this.states.values()) dropped += s.resetForRedelivery();
      if (dropped > 0) this.m.redelivered.inc(dropped);
      log.info({ assignment: e.payload.memberAssignment, dropped }, 'joined the lake consumer group');
    });
  }

  async start(): Promise<void> {
    const { cfg } = this;
    await removeStaleScratch(cfg.batch.scratchDir);
    this.scratch = path.join(cfg.batch.scratchDir, `lake-writer-${process.pid}-${randomBytes(3).toString('hex')}`);
    await fsp.mkdir(this.scratch, { recursive: true });
    this.ticker = setInterval(() => this.tick(), Math.max(100, Math.min(1000, this.policy.rollAgeMs / 4)));
    this.ticker.unref();
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic], fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async (payload) => {
        const p = this.consumeBatch(payload);
        this.currentBatch = p;
        try {
          await p;
        } finally {
          if (this.currentBatch === p) this.currentBatch = null;
        }
      },
    });
  }

  /** Flush every open file, wait for the uploads and commit; then leave the group. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      if (this.ticker) clearInterval(this.ticker);
      this.consumer.pause([{ topic: this.cfg.kafka.rawTopic }, { topic: this.cfg.kafka.dlqTopic }]);
      if (this.currentBatch) await this.currentBatch.catch(() => {});
      const timeout = setTimeout(() => {
        this.abandoned = true;
      }, STOP_TIMEOUT_MS);
      try {
        await this.flush();
      } finally {
        clearTimeout(timeout);
        await this.consumer.disconnect().catch((err: Error) => log.warn({ err: err.message }, 'consumer disconnect failed'));
        await fsp.rm(this.scratch, { recursive: true, force: true });
        log.info(this.status(), 'lake writer stopped');
      }
    })();
    return this.stopped;
  }

  /** Roll every open file now and wait until it is uploaded and its offsets committed. */
  async flush(): Promise<void> {
    for (const s of this.states.values()) for (const b of [...s.open.values()]) void this.roll(s, b);
    while (this.uploads.size > 0) await Promise.all([...this.uploads]);
    for (const s of this.states.values()) await this.commit(s);
  }

  status(): LakeWriterStatus {
    let buffered = 0;
    let uploading = 0;
    const committed: Record<string, string> = {};
    for (const s of this.states.values()) {
      for (const b of s.open.values()) buffered += b.rows.length;
      uploading += s.uploading.size;
      if (s.committed !== null) committed[`${s.topic}:${s.partition}`] = s.committed.toString();
    }
    const { consumed, objectsUploaded, failingUploads } = this;
    return { consumed, buffered, uploading, objectsUploaded, failingUploads, committed };
  }

  /** What /health reports: `ok`, or why not. */
  condition(): 'ok' | 'stopping' | 'uploads failing' {
    return this.stopping ? 'stopping' : this.failingUploads >= UNHEALTHY_AFTER_FAILURES ? 'uploads failing' : 'ok';
  }

  /** Consume one batch of a partition: decode and buffer each record, rolling what is full, under back-pressure. */
  private async consumeBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { cfg } = this;
    const state = this.stateOf(batch.topic, batch.partition);
    const touched = new Set<FileBuffer>();
    let complete = true;
    for (const message of batch.messages) {
      if (this.stopping || !isRunning() || isStale()) {
        complete = false;
        break;
      }
      const buf = this.buffer(state, message);
      if (buf) touched.add(buf);
      resolveOffset(message.offset);
      if (buf && buf.bytes >= this.policy.rollBytes) {
        void this.roll(state, buf);
        await heartbeat();
      }
      if (this.totalBytes() > cfg.lake.maxBufferBytes) await this.relieveMemory(heartbeat);
    }
    if (complete && batch.messages.length > 0) {
      const passed = passedFiles(state, touched, Number(batch.offsetLag()), cfg.lake.catchupLag);
      for (const b of passed) void this.roll(state, b);
      if (passed.length > 0) {
        this.m.catchupRolls.inc(passed.length);
        // Reading on while files queue for an upload slot would only move the backlog from Kafka into memory.
        // (Files, not upload tasks: a task whose file is uploaded may still wait for its turn to commit.)
        while (this.filesUploading() > MAX_QUEUED_UPLOADS_PER_SLOT * cfg.lake.uploadConcurrency && !this.stopping) {
          await this.nextUploaded(1000);
          await heartbeat();
        }
      }
    }
    this.refreshGauges();
  }

  /** Back-pressure: roll the biggest open files until half the budget stays open, then wait for uploads to free memory. */
  private async relieveMemory(heartbeat: () => Promise<void>): Promise<void> {
    const max = this.cfg.lake.maxBufferBytes;
    const open = new Map<FileBuffer, PartitionState>();
    for (const s of this.states.values()) for (const b of s.open.values()) open.set(b, s);
    for (const b of filesToRelieve([...open.keys()], max / 2)) void this.roll(open.get(b)!, b);
    while (this.totalBytes() > max && this.uploads.size > 0) {
      await Promise.race([Promise.race(this.uploads), new Promise((r) => setTimeout(r, 1000))]);
      await heartbeat();
    }
  }

  /** Add a message to its partition's file for its stream and period; the file it went to, or null for an empty message. */
  private buffer(state: PartitionState, message: KafkaMessage): FileBuffer | null {
    const offset = BigInt(message.offset);
    if (!message.value) {
      state.consumed(offset);
      return null;
    }
    const t = this.now();
    const { kind, line, period, head } = this.decode(state, message as KafkaMessage & { value: Buffer });
    this.uncounted[kind] += 1;
    this.consumed += 1;
    return state.add(kind, period, offset, line, undefined, t, head);
  }

  /** Decode a record; one that breaks the contract on the raw topic is counted and logged here. */
  private decode(state: PartitionState, message: KafkaMessage & { value: Buffer }): Decoded {
    const d = decodeMessage(state.topic, state.topic === this.cfg.kafka.rawTopic, state.partition, message);
    if (d.rejected) {
      this.m.unreadable.inc();
      const { topic, partition } = state;
      log.error({ topic, partition, offset: message.offset, reason: d.rejected.reason, detail: d.rejected.detail }, 'unreadable record on the raw topic, archived as a dead letter');
    }
    return d;
  }

  /** Roll files by age, and commit what became safe (a commit may have failed on a rebalance). */
  private tick(): void {
    const t = this.now();
    for (const s of this.states.values()) {
      for (const b of [...s.open.values()]) if (shouldRoll(b, this.policy, t)) void this.roll(s, b);
      if (s.committed === null || (s.committable() ?? -1n) > s.committed) void this.commit(s);
    }
    this.refreshGauges();
  }

  /** Take an open file out of its partition and upload it (retrying until it succeeds or the writer is abandoned), then commit. */
  private roll(state: PartitionState, buf: FileBuffer): Promise<void> {
    state.take(buf);
    const task = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.slots.acquire();
          try {
            await this.upload(buf);
          } finally {
            this.slots.release();
          }
          this.failingUploads = 0;
          break;
        } catch (err) {
          this.failingUploads += 1;
          this.m.uploadFailures.inc();
          if (this.abandoned) {
            log.error({ key: objectKey(buf), err: (err as Error).message }, 'giving up on an object at shutdown; its offsets stay uncommitted and are redelivered');
            return;
          }
          const delay = Math.min(30_000, 250 * 2 ** attempt);
          log.warn({ key: objectKey(buf), attempt, delay, err: (err as Error).message }, 'object upload failed, retrying');
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      state.uploaded(buf);
      for (const wake of this.uploadedWaiters.splice(0)) wake();
      this.objectsUploaded += 1;
      this.refreshGauges();
      await this.commit(state);
    })();
    this.uploads.add(task);
    void task.finally(() => this.uploads.delete(task));
    return task;
  }

  /** Encode a file as Parquet and upload it under its key; late data then marks its hour and day dirty. */
  private async upload(buf: FileBuffer): Promise<void> {
    const key = objectKey(buf);
    const file = path.join(this.scratch, `${randomBytes(6).toString('hex')}.parquet`);
    const t0 = Date.now();
    try {
      await writeParquetLines(buf.kind === 'raw' ? 'raw' : 'dlq', buf.rows, file);
      const { size } = await fsp.stat(file);
      await uploadFile(this.s3, this.cfg.s3.bucket, key, file, { partSize: this.cfg.lake.partSizeBytes });
      // Judged after the upload: an hour that closed while we uploaded is still marked.
      if (buf.kind === 'raw' && isHourClosed(buf.period, this.now())) {
        await this.markDirty(buf.period, buf.rows.length, key);
        this.m.late.inc(buf.rows.length);
      }
      this.m.objects.inc({ stream: buf.kind });
      this.m.objectBytes.inc(size);
      this.m.objectRows.observe(buf.rows.length);
      this.m.uploadSeconds.observe((Date.now() - t0) / 1000);
      log.debug({ key, rows: buf.rows.length, bytes: size }, 'object uploaded');
    } finally {
      await fsp.rm(file, { force: true });
    }
  }

  private async markDirty(hour: string, rows: number, key: string): Promise<void> {
    const markedAt = this.now();
    const reason = `late data: ${rows} record(s) in ${key}`;
    const hourly: DirtyMarker = { kind: 'hourly', period: hour, markedAt, reason };
    const daily: DirtyMarker = { kind: 'daily', period: hour.slice(0, 10), markedAt, reason };
    await putDirtyMarker(this.s3, this.cfg.s3.bucket, hourly);
    await putDirtyMarker(this.s3, this.cfg.s3.bucket, daily);
    this.m.dirtyMarkers.inc({ kind: 'hourly' });
    this.m.dirtyMarkers.inc({ kind: 'daily' });
  }

  /** Commit what is safe for a partition; serialized so an older commit never lands after a newer one. */
  private commit(state: PartitionState): Promise<void> {
    this.commitChain = this.commitChain.then(async () => {
      const offset = state.committable();
      if (offset === null || (state.committed !== null && offset <= state.committed)) return;
      try {
        await this.consumer.commitOffsets([{ topic: state.topic, partition: state.partition, offset: offset.toString() }]);
        state.committed = offset;
        this.m.committed.set({ topic: state.topic, partition: String(state.partition) }, Number(offset));
      } catch (err) {
        // Typically a rebalance; the next upload or tick commits again.
        log.warn({ err: (err as Error).message, topic: state.topic, partition: state.partition }, 'offset commit failed');
      }
    });
    return this.commitChain;
  }

  private stateOf(topic: string, partition: number): PartitionState {
    const id = `${topic}:${partition}`;
    let s = this.states.get(id);
    if (!s) this.states.set(id, (s = new PartitionState(topic, partition)));
    return s;
  }

  private refreshGauges(): void {
    for (const kind of ['raw', 'dlq', 'rawUnreadable'] as const) {
      if (this.uncounted[kind] > 0) this.m.records.inc({ stream: kind }, this.uncounted[kind]);
      this.uncounted[kind] = 0;
    }
    let buffered = 0;
    let bytes = 0;
    for (const s of this.states.values()) {
      for (const b of s.open.values()) buffered += b.rows.length;
      bytes += s.bufferedBytes();
    }
    this.m.buffered.set(buffered);
    this.m.bufferedBytes.set(bytes);
  }

  /** Resolves when the next file is uploaded, or after `ms`. */
  private nextUploaded(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.uploadedWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private filesUploading(): number {
    let n = 0;
    for (const s of this.states.values()) n += s.uploading.size;
    return n;
  }

  private totalBytes(): number {
    let n = 0;
    for (const s of this.states.values()) n += s.bufferedBytes();
    return n;
  }
}
