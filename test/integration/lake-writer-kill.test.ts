/**
 * Crash safety of the lake writer, as an operator would meet it: the writer
 * runs as its own process (`node --import tsx batch-layer/lake-writer/main.ts`)
 * with tiny files, is SIGKILLed mid-stream while it uploads, restarted, and
 * finally stopped with SIGTERM. Every produced event must be in the raw lake.
 * Duplicates are allowed in raw (it is "as received"); losses are not. The
 * hourly batch job then yields every event exactly once in processed/events.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Partitioners, type Admin, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths } from '../../common/lake';
import { logger } from '../../common/log';
import { jobContext, runHourly } from '../../batch-layer/jobs';
import { simulate } from '../../ingestion/simulator/generate';
import { listObjects, stageObjects, withScratchDir } from '../../common/lake-io';
import { isolatedConfig } from '../support/isolated';
import { spawnLakeWriter } from './lake-writer-support';

const T0 = Date.UTC(2024, 4, 1, 9);

let cfg: Config;
let producer: Producer;
let admin: Admin;
const children: ChildProcess[] = [];

beforeAll(async () => {
  cfg = await isolatedConfig('lakekill');
  const kafka = kafkaClient(cfg, 'lake-kill-test');
  producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: true });
  admin = kafka.admin();
  await Promise.all([producer.connect(), admin.connect()]);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await producer?.disconnect();
  await admin?.disconnect();
});

function startWriter(): ChildProcess {
  const child = spawnLakeWriter(cfg, {
    LAKE_ROLL_BYTES: '20000',
    LAKE_ROLL_AGE_SEC: '1',
    // The restarted writer waits this long for the killed member's partitions.
    LAKE_SESSION_TIMEOUT_MS: '6000',
  });
  children.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function until(what: string, pred: () => Promise<boolean>, timeoutMs = 60_000, pollMs = 250): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

async function committedOffsets(): Promise<Map<number, string>> {
  const [res] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [cfg.kafka.rawTopic] });
  return new Map(res.partitions.map((p) => [p.partition, p.offset]));
}

async function readParquet<T>(keys: string[], sql: (glob: string) => string, under: string): Promise<T[]> {
  const s3 = s3Client(cfg);
  return withScratchDir(cfg, async (dir) => {
    await stageObjects(s3, cfg.s3.bucket, keys, dir);
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    try {
      return (await conn.runAndReadAll(sql(path.join(dir, under)))).getRowObjectsJson() as T[];
    } finally {
      conn.closeSync();
      db.closeSync();
    }
  });
}

async function allCommitted(): Promise<boolean> {
  const committed = await committedOffsets();
  const ends = await admin.fetchTopicOffsets(cfg.kafka.rawTopic);
  return ends.every((p) => p.high === '0' || committed.get(p.partition) === p.high);
}

describe('lake writer crash safety', () => {
  it('loses nothing when SIGKILLed mid-upload and restarted', async () => {
    const records: EventRecord[] = [];
    for (const send of simulate({ seed: 7, users: 250, startMs: T0, endMs: T0 + 3 * 3_600_000, lateFraction: 0.03, duplicateFraction: 0.02 })) {
      if (send.kind === 'invalid') continue;
      const v = validateEvent(JSON.parse(send.line), send.sendAt);
      if (v.ok) records.push(v.record);
    }
    const expectedIds = new Set(records.map((r) => r.event_id));
    expect(records.length).toBeGreaterThan(2000);

    let first = startWriter();
    const producing = (async () => {
      for (let i = 0; i < records.length; i += 50) {
        await producer.send({
          topic: cfg.kafka.rawTopic,
          acks: -1,
          messages: records.slice(i, i + 50).map((r) => ({ key: r.user_id, value: JSON.stringify(r) })),
        });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const s3 = s3Client(cfg);
    // Kill at the worst moment: an object is uploaded but its offsets are not committed yet
    // (typically held back by an older late event still in another hour's open file).
    let uncommittedUpload = '';
    await until(
      'an uploaded object whose offsets are not committed',
      async () => {
        const committed = await committedOffsets();
        const objects = await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix);
        if (objects.length < 5) return false;
        for (const o of objects) {
          const [, p, , last] = /p(\d+)-(\d+)-(\d+)\.parquet$/.exec(o.key)!.map(Number);
          if (last >= Number(committed.get(p) ?? -1)) {
            uncommittedUpload = o.key;
            return true;
          }
        }
        return false;
      },
      60_000,
      20,
    );
    first.kill('SIGKILL');
    expect(await exited(first)).toEqual({ code: null, signal: 'SIGKILL' });
    // Post-mortem (nothing moves now): the dead writer's uploads past its committed offsets.
    const committedAtDeath = await committedOffsets();
    const uncommittedAtDeath = (await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix)).filter((o) => {
      const [, p, , last] = /p(\d+)-(\d+)-(\d+)\.parquet$/.exec(o.key)!.map(Number);
      return last >= Number(committedAtDeath.get(p) ?? -1);
    });
    expect(uncommittedUpload).not.toBe('');
    const objectsAtKill = (await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix)).length;

    const second = startWriter();
    await producing;
    await until('every produced offset to be committed', allCommitted, 90_000);
    second.kill('SIGTERM');
    expect(await exited(second)).toEqual({ code: 0, signal: null });

    const objects = await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix);
    expect(objects.length).toBeGreaterThan(objectsAtKill);
    const rows = await readParquet<{ event_id: string; ts: string; dt: string; hour: string }>(
      objects.map((o) => o.key),
      (glob) => `SELECT event_id, ts, dt::VARCHAR AS dt, hour::VARCHAR AS hour FROM read_parquet('${glob}/*/*/*.parquet', hive_partitioning = true)`,
      lakePaths.rawEventsPrefix,
    );
    const found = new Set(rows.map((r) => r.event_id));
    const lost = [...expectedIds].filter((id) => !found.has(id));
    expect(lost).toEqual([]);
    expect([...found].filter((id) => !expectedIds.has(id))).toEqual([]);
    for (const r of rows) expect(`${r.dt}T${r.hour.padStart(2, '0')}`).toBe(hourId(Number(r.ts)));
    // Redelivery re-writes what the dead writer had uploaded but not committed: under the same
    // key when the new file boundaries match, else in other objects (then those rows are in raw twice).
    expect(rows.length).toBeGreaterThanOrEqual(records.length);
    process.stderr.write(
      `[lake-kill] ${uncommittedAtDeath.length} object(s) uploaded but not committed at death (${uncommittedAtDeath.map((o) => o.key.split('/').pop()).join(', ')}); ` +
        `${records.length} sends, ${rows.length} raw rows\n`,
    );

    // The batch layer turns "as received" into exactly once.
    const hours = [...new Set(records.map((r) => hourId(r.ts)))].sort();
    const ctx = jobContext(cfg, logger('lake-kill-test'));
    const processedKeys: string[] = [];
    for (const hour of hours) processedKeys.push((await runHourly(ctx, hour)).outputs.events);
    const processed = await readParquet<{ event_id: string; n: number }>(
      processedKeys,
      (glob) => `SELECT event_id, count(*)::INT AS n FROM read_parquet('${glob}/*/*/*.parquet') GROUP BY event_id`,
      'processed/events/',
    );
    expect(processed.filter((r) => r.n !== 1)).toEqual([]);
    expect(new Set(processed.map((r) => r.event_id))).toEqual(expectedIds);
  });
});
