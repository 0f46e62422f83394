/**
 * The PySpark peer of the daily job (bench/peers/pyspark) computes the same tables as the
 * project: a simulated day with duplicates and late sends goes into the raw lake, the 24 hourly
 * jobs and the daily job publish it, and the peer, reading the same raw rows as one Parquet file,
 * must produce every daily table row for row. Only the benchmark's figures mean anything if
 * this holds.
 *
 * Skipped (with the reason) only when PySpark cannot be installed on this machine.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths } from '../../common/lake';
import { deleteObjects, listObjects } from '../../common/lake-io';
import { logger } from '../../common/log';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { hoursOfDay, jobContext, runDaily, runHourly, type JobContext } from '../../batch-layer/jobs';
import { simulate } from '../../ingestion/simulator/generate';
import { compareDaily, runPysparkDaily } from '../../bench/peers/pyspark';
import { ensurePyspark } from '../../bench/peers/setup';
import { isolatedConfig } from '../support/isolated';

const DAY = '2025-03-04';
const START = Date.parse(`${DAY}T00:00:00Z`);
const END = START + 86_400_000;
const PARTITIONS = 3;

/** Why PySpark is unusable here, or null when it is installed (installing it on first use). */
const unavailable = await ensurePyspark().then(
  () => null,
  (err: unknown) => (err as Error).message,
);
if (unavailable) process.stderr.write(`peers.test.ts: PySpark cannot be installed, the peer check is skipped: ${unavailable}\n`);

let cfg: Config;
let ctx: JobContext;
let tmp: string;

/** What the collector + lake writer would put in the lake: the day's valid sends with their Kafka position. */
function rawRows(): RawRow[] {
  const offsets = new Array<number>(PARTITIONS).fill(0);
  const rows: RawRow[] = [];
  for (const send of simulate({ seed: 12, users: 80, startMs: START, endMs: END, lateFraction: 0.03, duplicateFraction: 0.05 })) {
    const result = validateEvent(JSON.parse(send.line), END + 86_400_000);
    if (!result.ok) continue;
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = Number.parseInt(record.user_id.replace(/\D/g, '') || '0', 10) % PARTITIONS;
    rows.push({ record, partition, offset: String(offsets[partition]++) });
  }
  return rows;
}

/** One raw object per (hour, partition), keyed by its offsets like the lake writer's. */
async function writeLake(rows: RawRow[]): Promise<void> {
  const groups = new Map<string, RawRow[]>();
  for (const r of rows) {
    const k = `${hourId(r.record.ts)}|${r.partition}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  let i = 0;
  for (const [k, group] of groups) {
    const [hour, p] = k.split('|');
    const file = path.join(tmp, 'raw', `${i++}.parquet`);
    await writeRawParquet(group, file);
    const key = lakePaths.rawObject(hour, Number(p), group[0].offset, group[group.length - 1].offset);
    await s3Client(cfg).send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: fs.readFileSync(file) }));
  }
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peers-it-'));
  cfg = await isolatedConfig('peers');
  ctx = jobContext(cfg, logger('peers-test'));
});

afterAll(async () => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});

describe('the PySpark peer of the daily job', () => {
  it.skipIf(unavailable !== null)(`computes every daily table row for row as the project does${unavailable ? ` (skipped: PySpark cannot be installed: ${unavailable})` : ''}`, async () => {
    const rows = rawRows();
    const ids = rows.map((r) => r.record.event_id);
    expect(new Set(ids).size, 'the day has duplicates to remove').toBeLessThan(ids.length);
    await writeLake(rows);
    const local = path.join(tmp, 'day.parquet');
    await writeRawParquet(rows, local);

    const now = END + 2 * 86_400_000;
    for (const hour of hoursOfDay(DAY)) await runHourly(ctx, hour, { now });
    await runDaily(ctx, DAY, { shards: 2, now });

    const peer = await runPysparkDaily({ input: local, day: DAY, outDir: path.join(tmp, 'peer') });
    const diffs = await compareDaily(ctx, DAY, path.join(tmp, 'peer'), path.join(tmp, 'compare'));
    expect(diffs.map((d) => d.table).sort()).toEqual(Object.keys(peer.rowCounts).sort());
    for (const d of diffs) {
      expect({ table: d.table, missing: d.missing, unexpected: d.unexpected }).toEqual({ table: d.table, missing: [], unexpected: [] });
      expect(d.peerRows, d.table).toBe(d.projectRows);
      expect(d.projectRows, `${d.table} is not empty`).toBeGreaterThan(0);
    }
  }, 600_000);
});
