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
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { DLQ_REASONS, EVENT_TYPES, type DeadLetter, type EventRecord } from '../../common/contract';
import { dayId, type DirtyMarker } from '../../common/lake';
import { logger } from '../../common/log';
import { startStatusServer, type StatusServer } from '../../common/status-server';
import { putDirtyMarker, uploadFile } from '../../common/lake-io';
import { PartitionState, filesToRelieve, isHourClosed, objectKey, passedFiles, periodOf, shouldRoll, type FileBuffer, type StreamKind } from './buffers';
import { dlqLine, rawLine, writeParquetLines } from './parquet';

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

export interface LakeWriter {
  /** Flush every open file, wait for the uploads and commit; then leave the group. Idempotent. */
  stop(): Promise<void>;
  /** Roll every open file now and wait until it is uploaded and its offsets committed. */
  flush(): Promise<void>;
  status(): LakeWriterStatus;
  /** The /metrics and /health port (useful when configured as 0). */
  port: number;
  registry: Registry;
}

export interface LakeWriterOptions {
  s3?: S3Client;
  /** Serve /metrics and /health (default true). */
  http?: boolean;
  /** Clock, for tests of late data. */
  now?: () => number;
}

const log = logger('lake-writer');
const STOP_TIMEOUT_MS = 60_000;
/** With the retry backoff (0.25 s doubling, capped at 30 s), ten failures in a row is about 90 s without a successful upload. */
const UNHEALTHY_AFTER_FAILURES = 10;
/** While catching up, consumption waits once this many files per upload slot are uploading or queued for one. */
const MAX_QUEUED_UPLOADS_PER_SLOT = 4;

function metrics(registry: Registry) {
  return {
    records: new Counter({ name: 'lake_writer_records_total', help: 'Records consumed, by stream', labelNames: ['stream'], registers: [registry] }),
    objects: new Counter({ name: 'lake_writer_objects_total', help: 'Objects uploaded, by stream', labelNames: ['stream'], registers: [registry] }),
    objectBytes: new Counter({ name: 'lake_writer_object_bytes_total', help: 'Parquet bytes uploaded', registers: [registry] }),
    objectRows: new Histogram({
      name: 'lake_writer_object_rows',
      help: 'Rows per uploaded object',
      buckets: [10, 100, 1000, 10_000, 100_000, 1_000_000],
      registers: [registry],
    }),
    uploadSeconds: new Histogram({
      name: 'lake_writer_upload_seconds',
      help: 'Time to encode and upload one object',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    uploadFailures: new Counter({ name: 'lake_writer_upload_failures_total', help: 'Failed encode/upload attempts (retried)', registers: [registry] }),
    late: new Counter({ name: 'lake_writer_late_records_total', help: 'Records written into an hour that was already over', registers: [registry] }),
    dirtyMarkers: new Counter({ name: 'lake_writer_dirty_markers_total', help: 'Dirty markers written', labelNames: ['kind'], registers: [registry] }),
    unreadable: new Counter({
      name: 'lake_writer_unreadable_records_total',
      help: 'Records on events.raw that broke the contract (archived under raw/dlq/)',
      registers: [registry],
    }),
    buffered: new Gauge({ name: 'lake_writer_buffered_records', help: 'Records in open files', registers: [registry] }),
    bufferedBytes: new Gauge({ name: 'lake_writer_buffered_bytes', help: 'Bytes held in open and uploading files', registers: [registry] }),
    committed: new Gauge({
      name: 'lake_writer_committed_offset',
      help: 'Committed offset (exclusive) per topic partition',
      labelNames: ['topic', 'partition'],
      registers: [registry],
    }),
    catchupRolls: new Counter({
      name: 'lake_writer_catchup_rolls_total',
      help: 'Files rolled because a partition far behind had moved past them (catch-up)',
      registers: [registry],
    }),
    redelivered: new Counter({
      name: 'lake_writer_rebalance_dropped_records_total',
      help: 'Buffered records dropped on a group rebalance (they are redelivered)',
      registers: [registry],
    }),
  };
}

/** A time a Date can hold: anything else would make its hour or day key throw and block the partition. */
function validTime(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 8.64e15;
}

/** Parse a record of events.raw, or say why it is unreadable. */
export function parseRawRecord(value: string): { ok: true; record: EventRecord } | { ok: false; reason: DeadLetter['reason']; detail: string } {
  let obj: unknown;
  try {
    obj = JSON.parse(value);
  } catch (err) {
    return { ok: false, reason: 'malformed_json', detail: (err as Error).message };
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return { ok: false, reason: 'not_an_object', detail: 'record is not a JSON object' };
  const r = obj as Record<string, unknown>;
  const isObj = (v: unknown) => v === undefined || v === null || (typeof v === 'object' && !Array.isArray(v));
  const problems: string[] = [];
  for (const f of ['event_id', 'user_id'] as const) if (typeof r[f] !== 'string' || r[f] === '') problems.push(`${f} must be a non-empty string`);
  if (!(EVENT_TYPES as readonly unknown[]).includes(r.event_type)) problems.push('event_type is not a known type');
  if (!validTime(r.ts)) problems.push('ts must be an integer epoch-ms time');
  for (const f of ['properties', 'context', 'extra'] as const) if (!isObj(r[f])) problems.push(`${f} must be an object or null`);
  if (problems.length > 0) return { ok: false, reason: 'schema_violation', detail: problems.join('; ') };
  const str = (v: unknown, fallback: string) => (typeof v === 'string' ? v : fallback);
  return {
    ok: true,
    record: {
      event_id: r.event_id as string,
      event_type: r.event_type as EventRecord['event_type'],
      user_id: r.user_id as string,
      session_id: typeof r.session_id === 'string' ? r.session_id : null,
      ts: r.ts as number,
      schema_version: Number.isInteger(r.schema_version) ? (r.schema_version as number) : 1,
      device_type: str(r.device_type, 'unknown'),
      country: str(r.country, 'unknown'),
      app_version: str(r.app_version, 'unknown'),
      content_id: typeof r.content_id === 'string' ? r.content_id : null,
      received_at: Number.isSafeInteger(r.received_at) ? (r.received_at as number) : 0,
      properties: (r.properties as Record<string, unknown> | undefined) ?? null,
      context: (r.context as Record<string, unknown> | undefined) ?? null,
      extra: (r.extra as Record<string, unknown> | undefined) ?? null,
      // Present when the collector corrected ts for the device's clock skew (docs/metrics.md).
      ...(validTime(r.device_ts) ? { device_ts: r.device_ts } : {}),
      ...(validTime(r.sent_at) ? { sent_at: r.sent_at } : {}),
    },
  };
}

/** Parse a record of events.dlq; a broken one is still archived, wrapped as malformed. */
export function parseDeadLetter(value: string, fallbackReceivedAt: number): DeadLetter {
  try {
    const d = JSON.parse(value) as Partial<DeadLetter>;
    if (d && typeof d === 'object' && (DLQ_REASONS as readonly unknown[]).includes(d.reason) && typeof d.raw === 'string') {
      return {
        reason: d.reason!,
        detail: typeof d.detail === 'string' ? d.detail : '',
        received_at: validTime(d.received_at) ? d.received_at! : fallbackReceivedAt,
        raw: d.raw,
        ...(Number.isInteger(d.index) ? { index: d.index } : {}),
      };
    }
  } catch {
    /* archived below as malformed */
  }
  return { reason: 'malformed_json', detail: 'unreadable dead letter on the DLQ topic', received_at: fallbackReceivedAt, raw: value };
}

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

export async function startLakeWriter(cfg: Config, opts: LakeWriterOptions = {}): Promise<LakeWriter> {
  const now = opts.now ?? Date.now;
  const s3 = opts.s3 ?? s3Client(cfg);
  const bucket = cfg.s3.bucket;
  const rawTopic = cfg.kafka.rawTopic;
  const dlqTopic = cfg.kafka.dlqTopic;
  const policy = { rollBytes: cfg.lake.rollBytes, rollAgeMs: cfg.lake.rollAgeSec * 1000 };
  await removeStaleScratch(cfg.batch.scratchDir);
  const scratch = path.join(cfg.batch.scratchDir, `lake-writer-${process.pid}-${randomBytes(3).toString('hex')}`);
  await fsp.mkdir(scratch, { recursive: true });

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'lake_writer_' });
  const m = metrics(registry);

  const states = new Map<string, PartitionState>();
  const stateOf = (topic: string, partition: number): PartitionState => {
    const id = `${topic}:${partition}`;
    let s = states.get(id);
    if (!s) states.set(id, (s = new PartitionState(topic, partition)));
    return s;
  };

  let consumed = 0;
  let objectsUploaded = 0;
  let failingUploads = 0;
  let stopping = false;
  let abandoned = false;
  const uploads = new Set<Promise<void>>();
  const slots = semaphore(cfg.lake.uploadConcurrency);
  let commitChain: Promise<void> = Promise.resolve();
  let currentBatch: Promise<void> | null = null;

  const kafka = kafkaClient(cfg, `${cfg.kafka.clientId}-lake-writer`);
  const consumer: Consumer = kafka.consumer({
    groupId: cfg.kafka.lakeGroup,
    sessionTimeout: cfg.lake.sessionTimeoutMs,
    heartbeatInterval: Math.min(3_000, Math.floor(cfg.lake.sessionTimeoutMs / 3)),
    // Bounds how long a stop waits for an idle fetch to return.
    maxWaitTimeInMs: 1_000,
  });

  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    // A new generation re-reads every assigned partition from its committed offset.
    let dropped = 0;
    for (const s of states.values()) dropped += s.resetForRedelivery();
    if (dropped > 0) m.redelivered.inc(dropped);
    log.info({ assignment: e.payload.memberAssignment, dropped }, 'joined the lake consumer group');
  });

  function refreshGauges(): void {
    let buffered = 0;
    let bytes = 0;
    for (const s of states.values()) {
      for (const b of s.open.values()) buffered += b.rows.length;
      bytes += s.bufferedBytes();
    }
    m.buffered.set(buffered);
    m.bufferedBytes.set(bytes);
  }

  /** Resolves when the next file is uploaded (or after `ms`): waking on upload tasks would also wait for their commits' turn. */
  const uploadedWaiters: Array<() => void> = [];
  function nextUploaded(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      uploadedWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  function filesUploading(): number {
    let n = 0;
    for (const s of states.values()) n += s.uploading.size;
    return n;
  }

  function totalBytes(): number {
    let n = 0;
    for (const s of states.values()) n += s.bufferedBytes();
    return n;
  }

  /** Commit what is safe for a partition; serialized so an older commit never lands after a newer one. */
  function commit(state: PartitionState): Promise<void> {
    commitChain = commitChain.then(async () => {
      const offset = state.committable();
      if (offset === null || (state.committed !== null && offset <= state.committed)) return;
      try {
        await consumer.commitOffsets([{ topic: state.topic, partition: state.partition, offset: offset.toString() }]);
        state.committed = offset;
        m.committed.set({ topic: state.topic, partition: String(state.partition) }, Number(offset));
      } catch (err) {
        // Typically a rebalance; the next upload or tick commits again.
        log.warn({ err: (err as Error).message, topic: state.topic, partition: state.partition }, 'offset commit failed');
      }
    });
    return commitChain;
  }

  async function markDirty(hour: string, rows: number, key: string): Promise<void> {
    const markedAt = now();
    const reason = `late data: ${rows} record(s) in ${key}`;
    const hourly: DirtyMarker = { kind: 'hourly', period: hour, markedAt, reason };
    const daily: DirtyMarker = { kind: 'daily', period: hour.slice(0, 10), markedAt, reason };
    await putDirtyMarker(s3, bucket, hourly);
    await putDirtyMarker(s3, bucket, daily);
    m.dirtyMarkers.inc({ kind: 'hourly' });
    m.dirtyMarkers.inc({ kind: 'daily' });
  }

  async function writeObject(buf: FileBuffer): Promise<void> {
    const key = objectKey(buf);
    const file = path.join(scratch, `${randomBytes(6).toString('hex')}.parquet`);
    const t0 = Date.now();
    try {
      await writeParquetLines(buf.kind === 'raw' ? 'raw' : 'dlq', buf.rows, file);
      const { size } = await fsp.stat(file);
      await uploadFile(s3, bucket, key, file, { partSize: cfg.lake.partSizeBytes });
      // Judged after the upload: an hour that closed while we uploaded is still marked.
      if (buf.kind === 'raw' && isHourClosed(buf.period, now())) {
        await markDirty(buf.period, buf.rows.length, key);
        m.late.inc(buf.rows.length);
      }
      m.objects.inc({ stream: buf.kind });
      m.objectBytes.inc(size);
      m.objectRows.observe(buf.rows.length);
      m.uploadSeconds.observe((Date.now() - t0) / 1000);
      log.debug({ key, rows: buf.rows.length, bytes: size }, 'object uploaded');
    } finally {
      await fsp.rm(file, { force: true });
    }
  }

  /** Take an open file out of its partition and upload it (retrying until it succeeds or the writer is abandoned). */
  function roll(state: PartitionState, buf: FileBuffer): Promise<void> {
    state.take(buf);
    const task = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          await slots.acquire();
          try {
            await writeObject(buf);
          } finally {
            slots.release();
          }
          failingUploads = 0;
          break;
        } catch (err) {
          failingUploads += 1;
          m.uploadFailures.inc();
          if (abandoned) {
            log.error({ key: objectKey(buf), err: (err as Error).message }, 'giving up on an object at shutdown; its offsets stay uncommitted and are redelivered');
            return;
          }
          const delay = Math.min(30_000, 250 * 2 ** attempt);
          log.warn({ key: objectKey(buf), attempt, delay, err: (err as Error).message }, 'object upload failed, retrying');
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      state.uploaded(buf);
      for (const wake of uploadedWaiters.splice(0)) wake();
      objectsUploaded += 1;
      refreshGauges();
      await commit(state);
    })();
    uploads.add(task);
    void task.finally(() => uploads.delete(task));
    return task;
  }


  function add(topic: string, partition: number, message: KafkaMessage): FileBuffer | null {
    const state = stateOf(topic, partition);
    const offset = BigInt(message.offset);
    if (!message.value) {
      state.consumed(offset);
      return null;
    }
    const text = message.value.toString('utf8');
    const t = now();
    const kafkaTs = Number(message.timestamp);
    let kind: StreamKind;
    let line: string;
    let period: string;
    if (topic === rawTopic) {
      const parsed = parseRawRecord(text);
      if (parsed.ok) {
        kind = 'raw';
        line = rawLine({ record: parsed.record, partition, offset: message.offset });
        period = periodOf('raw', parsed.record.ts);
      } else {
        kind = 'rawUnreadable';
        m.unreadable.inc();
        log.error({ topic, partition, offset: message.offset, reason: parsed.reason, detail: parsed.detail }, 'unreadable record on the raw topic, archived as a dead letter');
        const dead: DeadLetter = { reason: parsed.reason, detail: `unreadable on ${topic}: ${parsed.detail}`, received_at: kafkaTs, raw: text };
        line = dlqLine({ dead, topic, partition, offset: message.offset });
        period = dayId(kafkaTs);
      }
    } else {
      kind = 'dlq';
      const dead = parseDeadLetter(text, kafkaTs);
      line = dlqLine({ dead, topic, partition, offset: message.offset });
      period = dayId(dead.received_at);
    }
    m.records.inc({ stream: kind });
    consumed += 1;
    return state.add(kind, period, offset, line, line.length, t);
  }

  async function eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const state = stateOf(batch.topic, batch.partition);
    const touched = new Set<FileBuffer>();
    let complete = true;
    for (const message of batch.messages) {
      if (stopping || !isRunning() || isStale()) {
        complete = false;
        break;
      }
      const buf = add(batch.topic, batch.partition, message);
      if (buf) touched.add(buf);
      resolveOffset(message.offset);
      if (buf && buf.bytes >= policy.rollBytes) {
        void roll(state, buf);
        await heartbeat();
      }
      if (totalBytes() > cfg.lake.maxBufferBytes) {
        // Back-pressure: roll the biggest open files until half the budget stays open, then wait for uploads to free memory.
        const open = new Map<FileBuffer, PartitionState>();
        for (const s of states.values()) for (const b of s.open.values()) open.set(b, s);
        for (const b of filesToRelieve([...open.keys()], cfg.lake.maxBufferBytes / 2)) void roll(open.get(b)!, b);
        while (totalBytes() > cfg.lake.maxBufferBytes && uploads.size > 0) {
          await Promise.race([Promise.race(uploads), new Promise((r) => setTimeout(r, 1000))]);
          await heartbeat();
        }
      }
    }
    if (complete && batch.messages.length > 0) {
      const passed = passedFiles(state, touched, Number(batch.offsetLag()), cfg.lake.catchupLag);
      for (const b of passed) void roll(state, b);
      if (passed.length > 0) {
        m.catchupRolls.inc(passed.length);
        // Reading on while files queue for an upload slot would only move the backlog from Kafka into memory.
        // (Files, not upload tasks: a task whose file is uploaded may still wait for its turn to commit.)
        while (filesUploading() > MAX_QUEUED_UPLOADS_PER_SLOT * cfg.lake.uploadConcurrency && !stopping) {
          await nextUploaded(1000);
          await heartbeat();
        }
      }
    }
    refreshGauges();
  }

  const tickMs = Math.max(100, Math.min(1000, policy.rollAgeMs / 4));
  const ticker = setInterval(() => {
    const t = now();
    for (const s of states.values()) {
      for (const b of [...s.open.values()]) if (shouldRoll(b, policy, t)) void roll(s, b);
      if (s.committed === null || (s.committable() ?? -1n) > s.committed) void commit(s);
    }
    refreshGauges();
  }, tickMs);
  ticker.unref();

  await consumer.connect();
  await consumer.subscribe({ topics: [rawTopic, dlqTopic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async (payload) => {
      const p = eachBatch(payload);
      currentBatch = p;
      try {
        await p;
      } finally {
        if (currentBatch === p) currentBatch = null;
      }
    },
  });

  let server: StatusServer | null = null;
  let port = 0;
  if (opts.http !== false) {
    server = await startStatusServer({
      host: cfg.lake.host,
      port: cfg.lake.port,
      registry,
      log,
      health: () => {
        const st = status();
        const state = stopping ? 'stopping' : st.failingUploads >= UNHEALTHY_AFTER_FAILURES ? 'uploads failing' : 'ok';
        return { ok: state === 'ok', ...st, status: state };
      },
    });
    port = server.port;
  }
  log.info({ group: cfg.kafka.lakeGroup, topics: [rawTopic, dlqTopic], bucket, rollBytes: policy.rollBytes, rollAgeSec: cfg.lake.rollAgeSec, port }, 'lake writer started');

  function status(): LakeWriterStatus {
    let buffered = 0;
    let uploading = 0;
    const committed: Record<string, string> = {};
    for (const s of states.values()) {
      for (const b of s.open.values()) buffered += b.rows.length;
      uploading += s.uploading.size;
      if (s.committed !== null) committed[`${s.topic}:${s.partition}`] = s.committed.toString();
    }
    return { consumed, buffered, uploading, objectsUploaded, failingUploads, committed };
  }

  async function flush(): Promise<void> {
    for (const s of states.values()) for (const b of [...s.open.values()]) void roll(s, b);
    while (uploads.size > 0) await Promise.all([...uploads]);
    for (const s of states.values()) await commit(s);
  }

  let stopped: Promise<void> | null = null;
  function stop(): Promise<void> {
    stopped ??= (async () => {
      stopping = true;
      clearInterval(ticker);
      consumer.pause([{ topic: rawTopic }, { topic: dlqTopic }]);
      if (currentBatch) await currentBatch.catch(() => {});
      const timeout = setTimeout(() => {
        abandoned = true;
      }, STOP_TIMEOUT_MS);
      try {
        await flush();
      } finally {
        clearTimeout(timeout);
        await consumer.disconnect().catch((err: Error) => log.warn({ err: err.message }, 'consumer disconnect failed'));
        if (server) await server.close();
        await fsp.rm(scratch, { recursive: true, force: true });
        log.info(status(), 'lake writer stopped');
      }
    })();
    return stopped;
  }

  return { stop, flush, status, port, registry };
}
