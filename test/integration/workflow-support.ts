/**
 * Helpers of the workflow integration tests: raw lake data as the lake writer
 * would write it (simulated events, validated by the contract, Parquet objects
 * keyed by Kafka offsets, uploaded to MinIO), and Temporal plumbing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { Client, Connection, type WorkflowExecutionDescription } from '@temporalio/client';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type DirtyMarker } from '../../common/lake';
import { putDirtyMarker, uploadFile } from '../../common/lake-io';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { simulate } from '../../ingestion/simulator/generate';
import { NativeConnection, Worker, type WorkflowBundle } from '@temporalio/worker';
import { createActivities } from '../../workflows/activities';

export interface SeededHour {
  hour: string;
  keys: string[];
  /** Distinct valid event ids whose event time falls in the hour. */
  eventIds: Set<string>;
}

/**
 * Simulates [startMs, endMs) with a few users and writes the valid events as
 * raw objects (one per hour × partition). `offsetBase` keeps the object keys of
 * a second wave (late data) apart from the first.
 */
export async function seedRaw(
  cfg: Config,
  opts: { seed: number; users: number; startMs: number; endMs: number; partitions?: number; offsetBase?: number; duplicateFraction?: number },
): Promise<Map<string, SeededHour>> {
  const partitions = opts.partitions ?? 2;
  const offsets = new Array<number>(partitions).fill(opts.offsetBase ?? 0);
  const byObject = new Map<string, RawRow[]>();
  const clock = opts.endMs + 86_400_000;
  for (const send of simulate({ seed: opts.seed, users: opts.users, startMs: opts.startMs, endMs: opts.endMs, duplicateFraction: opts.duplicateFraction ?? 0.02 })) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(send.line);
    } catch {
      continue;
    }
    const result = validateEvent(parsed, clock);
    if (!result.ok) continue;
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = hash(record.user_id) % partitions;
    const row: RawRow = { record, partition, offset: String(offsets[partition]++) };
    const k = `${hourId(record.ts)}|${partition}`;
    byObject.set(k, [...(byObject.get(k) ?? []), row]);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wf-seed-'));
  const s3 = s3Client(cfg);
  const hours = new Map<string, SeededHour>();
  try {
    let i = 0;
    for (const [k, rows] of byObject) {
      const [hour, p] = k.split('|');
      const key = lakePaths.rawObject(hour, Number(p), rows[0].offset, rows[rows.length - 1].offset);
      const file = path.join(tmp, `${i++}.parquet`);
      await writeRawParquet(rows, file);
      await uploadFile(s3, cfg.s3.bucket, key, file);
      const h = hours.get(hour) ?? { hour, keys: [], eventIds: new Set<string>() };
      h.keys.push(key);
      for (const r of rows) h.eventIds.add(r.record.event_id);
      hours.set(hour, h);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return hours;
}

function hash(s: string): number {
  let h = 0;
  for (const ch of s) h = (h * 31 + ch.charCodeAt(0)) | 0;
  return Math.abs(h);
}

/** An object that is not Parquet, where the lake writer would have put one. */
export async function putCorruptObject(cfg: Config, hour: string): Promise<string> {
  const key = lakePaths.rawObject(hour, 9, '0', '9');
  await s3Client(cfg).send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: 'PAR1 this is not parquet' }));
  return key;
}

/** What the lake writer writes when late data lands in an already computed hour. */
export async function markDirty(cfg: Config, hour: string, markedAt = Date.now()): Promise<void> {
  const s3 = s3Client(cfg);
  const hourly: DirtyMarker = { kind: 'hourly', period: hour, markedAt, reason: 'late data (test)' };
  const daily: DirtyMarker = { kind: 'daily', period: hour.slice(0, 10), markedAt, reason: 'late data (test)' };
  await putDirtyMarker(s3, cfg.s3.bucket, hourly);
  await putDirtyMarker(s3, cfg.s3.bucket, daily);
}

export async function temporalClient(cfg: Config): Promise<Client> {
  return new Client({ connection: await Connection.connect({ address: cfg.temporal.address }), namespace: cfg.temporal.namespace });
}

/** The typed search attributes of a run as plain `{ name: value }`. */
export function attributesOf(d: WorkflowExecutionDescription): Record<string, unknown> {
  return Object.fromEntries(d.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value]));
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Overrides every workflow test uses: ids and schedules apart from everyone else's, quick retries. */
export function orchestrationOverrides(label: string): Record<string, string> {
  const tag = `t-${label}-${Math.random().toString(16).slice(2, 8)}-`;
  return {
    TEMPORAL_WORKFLOW_ID_PREFIX: tag,
    TEMPORAL_SCHEDULE_ID_PREFIX: tag,
    TEMPORAL_CREATE_SCHEDULES: 'false',
    ACTIVITY_HEARTBEAT_SEC: '5',
    ACTIVITY_TIMEOUT_SEC: '300',
    ACTIVITY_RETRY_INITIAL_MS: '200',
    ACTIVITY_RETRY_MAX_MS: '2000',
    ACTIVITY_MAX_ATTEMPTS: '4',
    ORCHESTRATION_CONFLICT_RETRY_SEC: '1',
    BATCH_SHARDS: '2',
    BATCH_DUCKDB_THREADS: '1',
  };
}

/** waitFor that treats a throwing probe as "not yet" (e.g. a query before the workflow's first task ran). */
export function eventually<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  return waitFor(what, () => fn().catch(() => undefined), timeoutMs, everyMs);
}

/** A worker with the real activities on the test's isolated task queue, running until `stop()`. */
export async function startTestWorker(cfg: Config, bundle: WorkflowBundle): Promise<{ stop(): Promise<void> }> {
  const { activities, close } = createActivities(cfg);
  const worker = await Worker.create({
    connection: await NativeConnection.connect({ address: cfg.temporal.address }),
    namespace: cfg.temporal.namespace,
    taskQueue: cfg.temporal.taskQueue,
    workflowBundle: bundle,
    activities,
    maxConcurrentActivityTaskExecutions: 2,
  });
  const done = worker.run();
  return {
    async stop() {
      worker.shutdown();
      await done.catch(() => undefined);
      await close();
    },
  };
}

export interface Orchestration {
  client: Client;
  /** Stops the worker (its activities' clients too) and closes the client's connection. */
  stop(): Promise<void>;
}

/** A Temporal client and a test worker (see {@link startTestWorker}) on the test's task queue. */
export async function startOrchestration(cfg: Config, bundle: WorkflowBundle): Promise<Orchestration> {
  const client = await temporalClient(cfg);
  const worker = await startTestWorker(cfg, bundle);
  return {
    client,
    async stop() {
      await worker.stop();
      await client.connection.close();
    },
  };
}
