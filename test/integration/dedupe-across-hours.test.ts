/**
 * De-duplication as the contract says (issue 11, point 3): by event_id, the copy
 * received first wins, across hours and days within the dedupe horizon, whatever
 * timestamps the copies carry (an SDK that restamps a retry). On the real lake: the
 * same id re-sent into another hour (and another day) counts once, in the hour of the
 * copy received first, whichever hour the batch runs first; the loser's manifest counts
 * it as a synthetic duplicate.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { lakePaths, type RunManifest } from '../../common/lake';
import { logger } from '../../common/log';
import { deleteObjects, getJson, listObjects, stageObjects, uploadFile } from '../../common/lake-io';
import { writeRawParquet } from '../../batch-layer/lake-writer/parquet';
import { jobContext, listDirty, runHourly, type JobContext } from '../../batch-layer/jobs';
import { isolatedConfig } from '../support/isolated';

const T = (iso: string) => Date.parse(iso);

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let offset = 0;

function record(id: string, user: string, ts: number, receivedAt: number): EventRecord {
  const v = validateEvent({ event_id: id, event_type: 'click', user_id: user, timestamp: ts, properties: { device_type: 'mobile' } }, ts);
  if (!v.ok) throw new Error(v.detail);
  return { ...v.record, received_at: receivedAt };
}

/** One raw object for the hour of the records, offsets in the order given (one partition: the ids' user). */
async function writeRaw(records: EventRecord[]): Promise<void> {
  const hour = new Date(records[0].ts).toISOString().slice(0, 13);
  const file = path.join(tmp, `raw-${offset}.parquet`);
  await writeRawParquet(records.map((record, i) => ({ record, partition: 0, offset: String(offset + i) })), file);
  await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 0, String(offset), String(offset + records.length - 1)), file);
  offset += records.length;
}

/** The event ids the hour's published processed/events holds (through its manifest). */
async function processedIds(m: RunManifest): Promise<string[]> {
  const [file] = await stageObjects(s3Client(cfg), cfg.s3.bucket, [m.outputs.events], fs.mkdtempSync(path.join(tmp, 'p-')));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    return (await conn.runAndReadAll(`SELECT event_id FROM read_parquet('${file}') ORDER BY 1`)).getRowsJson().map((r) => String(r[0]));
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

beforeAll(async () => {
  cfg = await isolatedConfig('dedupe-hours');
  ctx = jobContext(cfg, logger('dedupe-hours-test'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dedupe-hours-'));
}, 60_000);

afterAll(async () => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});

describe('de-duplication across hours and days: first received wins', () => {
  it('an id re-sent with a timestamp in the next day counts once, in the hour of the copy received first', async () => {
    // First sent 2025-04-01 22:10, received at once; the SDK retried it a day later stamped with the retry time.
    const first = record('dup-1', 'u1', T('2025-04-01T22:10:00Z'), T('2025-04-01T22:10:01Z'));
    const retry = record('dup-1', 'u1', T('2025-04-02T23:40:00Z'), T('2025-04-02T23:40:01Z'));
    await writeRaw([first, record('a-1', 'u2', T('2025-04-01T22:20:00Z'), T('2025-04-01T22:20:01Z'))]);
    await writeRaw([record('b-1', 'u3', T('2025-04-02T23:05:00Z'), T('2025-04-02T23:05:01Z')), retry]);

    const early = await runHourly(ctx, '2025-04-01T22');
    const late = await runHourly(ctx, '2025-04-02T23');
    expect(await processedIds(early)).toEqual(['a-1', 'dup-1']);
    expect(await processedIds(late)).toEqual(['b-1']);
    expect(late.rowCounts.events).toBe(1);
    // Another timestamp is another payload: a synthetic duplicate, counted where it was dropped.
    expect(late.duplicates).toEqual({ natural: 0, synthetic: 1 });
    expect(early.duplicates).toEqual({ natural: 0, synthetic: 0 });
    expect(await listDirty(ctx)).toEqual([]);
  });

  it('when the hour of the later copy ran first, the run of the first copy marks it dirty and its re-run drops the id', async () => {
    const first = record('dup-2', 'u4', T('2025-04-03T09:15:00Z'), T('2025-04-03T09:15:00Z'));
    const restamped = record('dup-2', 'u4', T('2025-04-03T05:30:00Z'), T('2025-04-03T09:45:00Z'));
    await writeRaw([first, record('c-1', 'u5', T('2025-04-03T09:20:00Z'), T('2025-04-03T09:20:00Z'))]);
    await writeRaw([restamped, record('d-1', 'u6', T('2025-04-03T05:10:00Z'), T('2025-04-03T05:10:00Z'))]);

    // The hour holding the later-received copy runs first: it knows of no other copy and counts it.
    const wrongFirst = await runHourly(ctx, '2025-04-03T05');
    expect(await processedIds(wrongFirst)).toEqual(['d-1', 'dup-2']);
    // The hour of the first-received copy counts it, and marks the other hour (and its day) dirty.
    const winner = await runHourly(ctx, '2025-04-03T09');
    expect(await processedIds(winner)).toEqual(['c-1', 'dup-2']);
    const dirty = await listDirty(ctx);
    expect(dirty.map((d) => `${d.kind} ${d.period}`)).toEqual(['hourly 2025-04-03T05', 'daily 2025-04-03']);

    // Reconciliation's re-run drops it and clears the marker: the id counts once, in 09.
    const fixed = await runHourly(ctx, '2025-04-03T05');
    expect(await processedIds(fixed)).toEqual(['d-1']);
    expect(fixed.duplicates).toEqual({ natural: 0, synthetic: 1 });
    expect((await listDirty(ctx)).map((d) => `${d.kind} ${d.period}`)).toEqual(['daily 2025-04-03']);
    // The winner's re-run changes nothing and marks nothing.
    const again = await runHourly(ctx, '2025-04-03T09');
    expect(await processedIds(again)).toEqual(['c-1', 'dup-2']);
    expect((await listDirty(ctx)).map((d) => `${d.kind} ${d.period}`)).toEqual(['daily 2025-04-03']);
  });

  it('two hours whose runs miss each other (neither published when the other looked): the later publish marks the hour of the later copy', async () => {
    const first = record('dup-3', 'u8', T('2025-04-05T07:00:00Z'), T('2025-04-05T07:00:00Z'));
    const restamped = record('dup-3', 'u8', T('2025-04-05T03:30:00Z'), T('2025-04-05T07:30:00Z'));
    await writeRaw([first]);
    await writeRaw([restamped, record('e-1', 'u9', T('2025-04-05T03:10:00Z'), T('2025-04-05T03:10:00Z'))]);

    // The 03 run (later copy) reads its neighbours, computes, and is held mid-publish in a process of its own...
    const release = path.join(tmp, 'release-03');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/integration/fixtures/publish-child.ts'), '2025-04-05T03'], {
      cwd: REPO_ROOT,
      env: { ...process.env, S3_BUCKET: cfg.s3.bucket, LOG_LEVEL: 'warn', PAUSE_AFTER_PUBLISHED: 'processed/events/', PAUSE_UNTIL_FILE: release },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => ((out += d), /PAUSED/.test(out) && resolve()));
      child.once('exit', (code) => reject(new Error(`child exited ${code} before pausing: ${out}`)));
    });
    // ...while the 07 run (first copy) runs and publishes without seeing it: both count the id.
    const winner = await runHourly(ctx, '2025-04-05T07');
    expect(await processedIds(winner)).toEqual(['dup-3']);
    const dirtyOf = async (day: string) => (await listDirty(ctx)).filter((d) => d.period.startsWith(day)).map((d) => `${d.kind} ${d.period}`);
    expect(await dirtyOf('2025-04-05')).toEqual([]);
    fs.writeFileSync(release, '');
    expect(await exited).toBe(0);
    // 03 published second: its check after the publish sees 07's index and marks itself.
    const m03 = await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', '2025-04-05T03'));
    expect(await processedIds(m03!)).toEqual(['dup-3', 'e-1']);
    expect(await dirtyOf('2025-04-05')).toEqual(['hourly 2025-04-05T03', 'daily 2025-04-05']);
    const fixed = await runHourly(ctx, '2025-04-05T03');
    expect(await processedIds(fixed)).toEqual(['e-1']);
    expect(await dirtyOf('2025-04-05')).toEqual(['daily 2025-04-05']);
  });

  it('copies farther apart than the dedupe horizon are both counted (the documented limit)', async () => {
    const horizonHours = cfg.batch.latenessHorizonMs / 3_600_000;
    const a = record('far-1', 'u7', T('2025-05-01T10:00:00Z'), T('2025-05-01T10:00:00Z'));
    const b = record('far-1', 'u7', T('2025-05-01T10:00:00Z') + (horizonHours + 1) * 3_600_000, T('2025-05-01T10:00:00Z') + (horizonHours + 1) * 3_600_000);
    await writeRaw([a]);
    await writeRaw([b]);
    const ma = await runHourly(ctx, '2025-05-01T10');
    const mb = await runHourly(ctx, new Date(b.ts).toISOString().slice(0, 13));
    expect(await processedIds(ma)).toEqual(['far-1']);
    expect(await processedIds(mb)).toEqual(['far-1']);
  });
});
