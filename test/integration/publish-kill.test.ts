/**
 * A re-publish is atomic for every reader (issue 11, point 5). An hour is published
 * (run 1); late data lands in it; its re-run is a real child process SIGKILLed by
 * this test between two of the outputs its publish step writes. Every reader must
 * still see run 1 whole: the serving layer's batch store, `npm run lake`'s views,
 * the daily job reading the hour's processed events, and the DuckDB recipe over the
 * manifests in docs/lake.md. A successful re-run then switches every reader to the
 * new run as a whole, and garbage collection keeps the superseded run for its grace
 * period, then leaves only what the manifests name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
import { collectSupersededRuns, hoursOfDay, jobContext, runDaily, runHourly, type JobContext } from '../../batch-layer/jobs';
import { LakeSession } from '../../common/lake-views';
import { BatchStore } from '../../serving-layer/batch-store';
import { isolatedConfig } from '../support/isolated';

const DAY = '2025-03-04';
const HOUR = `${DAY}T10`;
const H0 = Date.parse(`${HOUR}:00:00Z`);
const HOURLY = ['events', 'event_ids', 'hourly_events', 'hourly_users', 'hourly_playback'];

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let offset = 0;
const children: ChildProcess[] = [];

function record(id: string, user: string, ts: number, type: string): EventRecord {
  const v = validateEvent({ event_id: id, event_type: type, user_id: user, timestamp: ts, properties: { device_type: 'mobile', content_id: 'c1' } }, ts);
  if (!v.ok) throw new Error(v.detail);
  return { ...v.record, received_at: ts };
}

/** One raw object of the hour, keyed by its offsets as the lake writer keys it. */
async function writeRaw(hour: string, records: EventRecord[]): Promise<void> {
  const file = path.join(tmp, `raw-${offset}.parquet`);
  await writeRawParquet(records.map((record, i) => ({ record, partition: 0, offset: String(offset + i) })), file);
  await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 0, String(offset), String(offset + records.length - 1)), file);
  offset += records.length;
}

/** What a whole run over the given records publishes for the hour: its event total and distinct users. */
function whole(records: EventRecord[]): { events: number; users: number } {
  return { events: records.length, users: new Set(records.map((r) => r.user_id)).size };
}

function runChild(hour: string, env: Record<string, string>): { child: ChildProcess; paused: Promise<string>; done: Promise<number | string | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test/integration/fixtures/publish-child.ts'), hour], {
    cwd: REPO_ROOT,
    env: { ...process.env, S3_BUCKET: cfg.s3.bucket, BATCH_SCRATCH_DIR: cfg.batch.scratchDir, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[publish child] ${d}`));
  let out = '';
  const paused = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const m = /^PAUSED (\S+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code, signal) => reject(new Error(`publish child exited (${signal ?? code}) before pausing; stdout: ${out}`)));
  });
  // A run that is not asked to pause never does: only a caller that awaits this sees the rejection.
  paused.catch(() => undefined);
  const done = new Promise<number | string | null>((r) => child.once('exit', (code, signal) => r(signal ?? code)));
  return { child, paused, done };
}

/** What the serving layer's batch store serves for the hour. */
async function servingView(): Promise<{ events: number; users: number }> {
  const store = await BatchStore.open(cfg, s3Client(cfg), logger('publish-kill-serving'), { readers: 1 });
  try {
    await store.sync();
    const [e] = await store.query(
      `SELECT sum(events)::INT AS n FROM hourly_events WHERE _period = $1 AND event_type = 'ALL' AND device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL'`,
      [HOUR],
    );
    const [u] = await store.query(`SELECT sum(users)::INT AS n FROM hourly_users WHERE _period = $1 AND device_type = 'ALL'`, [HOUR]);
    return { events: Number(e.n), users: Number(u.n) };
  } finally {
    await store.close();
  }
}

/** What `npm run lake` shows for the hour: its processed events and its hourly views (the catalog the CLI uses). */
async function lakeCliView(): Promise<{ processed: number; events: number; users: number }> {
  const dir = fs.mkdtempSync(path.join(tmp, 'lake-'));
  const session = await LakeSession.open({ s3: s3Client(cfg), bucket: cfg.s3.bucket, dir, range: { from: DAY, to: DAY } });
  try {
    const q = async (sql: string): Promise<number> => {
      await session.prepare(sql);
      return Number((await session.conn.runAndReadAll(sql)).getRowsJson()[0][0]);
    };
    return {
      processed: await q(`SELECT count(*)::INT FROM events WHERE hour = 10`),
      events: await q(`SELECT sum(events)::INT FROM hourly_events WHERE hour = 10 AND event_type = 'ALL' AND device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL'`),
      users: await q(`SELECT sum(users)::INT FROM hourly_users WHERE hour = 10 AND device_type = 'ALL'`),
    };
  } finally {
    session.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The DuckDB recipe of docs/lake.md ("only the current runs"), run over a local mirror of
 * the bucket: the file list comes from the manifests' JSON, never from a glob.
 */
async function recipeView(): Promise<{ events: number; globbed: number }> {
  const s3 = s3Client(cfg);
  const mirror = fs.mkdtempSync(path.join(tmp, 'mirror-'));
  const keys = [
    ...(await listObjects(s3, cfg.s3.bucket, '_manifests/hourly/')),
    ...(await listObjects(s3, cfg.s3.bucket, 'aggregated/hourly_events/')),
  ].map((o) => o.key);
  await stageObjects(s3, cfg.s3.bucket, keys, mirror);
  const base = `${mirror}/`;
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    await conn.run(
      `SET VARIABLE hourly_events_files = (
         SELECT list('${base}' || (outputs->>'hourly_events') ORDER BY 1)
         FROM read_json('${base}_manifests/hourly/*/*.json', columns = {outputs: 'JSON'}))`,
    );
    await conn.run(
      `CREATE VIEW hourly_events AS SELECT * FROM read_parquet(getvariable('hourly_events_files'),
         hive_partitioning = true, hive_types = {'dt': DATE, 'hour': INTEGER})`,
    );
    const total = `event_type = 'ALL' AND device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL' AND hour = 10`;
    const events = Number((await conn.runAndReadAll(`SELECT sum(events)::INT FROM hourly_events WHERE ${total}`)).getRowsJson()[0][0]);
    // What a plain glob over the prefix returns: every run's object still in the folder.
    const globbed = Number(
      (
        await conn.runAndReadAll(
          `SELECT sum(events)::INT FROM read_parquet('${base}aggregated/hourly_events/*/*/*.parquet', hive_partitioning = true, hive_types = {'dt': DATE, 'hour': INTEGER}) WHERE ${total}`,
        )
      ).getRowsJson()[0][0],
    );
    return { events, globbed };
  } finally {
    conn.closeSync();
    db.closeSync();
    fs.rmSync(mirror, { recursive: true, force: true });
  }
}

/** The day's daily run and the events it counted (its OBT total), read through its manifest. */
async function dailyTotal(): Promise<{ processedRows: number; obtEvents: number }> {
  const m = await runDaily(ctx, DAY, { shards: 2 });
  const [file] = await stageObjects(s3Client(cfg), cfg.s3.bucket, [m.outputs.daily_aggregates_with_dimensions], fs.mkdtempSync(path.join(tmp, 'obt-')));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const [[n]] = (
      await conn.runAndReadAll(`SELECT total_events::INT FROM read_parquet('${file}') WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL'`)
    ).getRowsJson();
    return { processedRows: m.rowCounts.processed_events, obtEvents: Number(n) };
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

async function hourFolders(): Promise<string[]> {
  const keys: string[] = [];
  for (const table of HOURLY) keys.push(...(await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.tablePrefix(table.startsWith('hourly_') ? 'aggregated' : 'processed', table, HOUR))).map((o) => o.key));
  return keys.sort();
}

async function hourManifest(): Promise<RunManifest> {
  return (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', HOUR)))!;
}

beforeAll(async () => {
  cfg = await isolatedConfig('publish-kill');
  ctx = jobContext(cfg, logger('publish-kill-test'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'publish-kill-'));
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});

describe('a re-publish is atomic for every reader', () => {
  it('a publisher SIGKILLed between two outputs leaves the previous run whole; the next run switches every reader at once', async () => {
    const types = ['click', 'video_play', 'video_pause', 'video_complete'];
    // Run 1: ten users in the hour (every other hour of the day has one event, so the day can publish).
    const wave1 = Array.from({ length: 30 }, (_, i) => record(`w1-${i}`, `u${i % 10}`, H0 + i * 60_000, types[i % 4]));
    // Late data: five more users in the same hour, so a mixed read shows in every table.
    const wave2 = Array.from({ length: 20 }, (_, i) => record(`w2-${i}`, `late${i % 5}`, H0 + 90_000 + i * 60_000, types[i % 4]));
    for (const hour of hoursOfDay(DAY)) {
      await writeRaw(hour, hour === HOUR ? wave1 : [record(`bg-${hour}`, 'u0', Date.parse(`${hour}:30:00Z`), 'click')]);
      await runHourly(ctx, hour);
    }
    const run1 = await hourManifest();
    const old = whole(wave1);
    const both = whole([...wave1, ...wave2]);
    const otherHours = 23;
    expect(await dailyTotal()).toEqual({ processedRows: old.events + otherHours, obtEvents: old.events + otherHours });

    await writeRaw(HOUR, wave2);
    // One output at a time, in table order, so the kill lands after processed/events and
    // aggregated/hourly_events are written and before aggregated/hourly_users.
    const killed = runChild(HOUR, { PAUSE_AFTER_PUBLISHED: 'aggregated/hourly_events/', BATCH_IO_CONCURRENCY: '1' });
    const pausedAt = await killed.paused;
    expect(pausedAt).toMatch(/^aggregated\/hourly_events\//);
    killed.child.kill('SIGKILL');
    expect(await killed.done).toBe('SIGKILL');

    // The dead run wrote two of its tables and no manifest: run 1 is still the one published.
    expect((await hourManifest()).runId).toBe(run1.runId);
    expect(await servingView()).toEqual(old);
    expect(await lakeCliView()).toEqual({ processed: old.events, ...old });
    expect((await recipeView()).events).toBe(old.events);
    expect(await dailyTotal()).toEqual({ processedRows: old.events + otherHours, obtEvents: old.events + otherHours });

    // A successful re-run (a process of its own, like the killed one) switches every reader to the new run, whole.
    const rerun = runChild(HOUR, {});
    expect(await rerun.done).toBe(0);
    const run3 = await hourManifest();
    expect(run3.runId).not.toBe(run1.runId);
    expect(run3.rowCounts.events).toBe(both.events);
    expect(await servingView()).toEqual(both);
    expect(await lakeCliView()).toEqual({ processed: both.events, ...both });
    const recipe = await recipeView();
    expect(recipe.events).toBe(both.events);
    // A plain glob reads every run still in the folder: run 1, the dead run's table and run 3.
    expect(recipe.globbed).toBe(old.events + 2 * both.events);
    expect(await dailyTotal()).toEqual({ processedRows: both.events + otherHours, obtEvents: both.events + otherHours });

    // Within the grace period run 1 stays fetchable for a reader that read its manifest a moment ago.
    const run1Keys = Object.values(run1.outputs);
    const present = await hourFolders();
    for (const key of run1Keys) expect(present).toContain(key);
    const early = await collectSupersededRuns(ctx);
    expect(early.deleted).toEqual([]);
    expect(await hourFolders()).toEqual(present);
    // Once it has passed, only what the manifests name is left.
    const beforeGc = [...(await listObjects(s3Client(cfg), cfg.s3.bucket, 'processed/')), ...(await listObjects(s3Client(cfg), cfg.s3.bucket, 'aggregated/'))].map((o) => o.key);
    const later = await collectSupersededRuns(ctx, { now: Date.now() + cfg.batch.supersededGraceMs + 60_000 });
    expect(later.deleted).toEqual(expect.arrayContaining(present.filter((k) => !Object.values(run3.outputs).includes(k))));
    expect(await hourFolders()).toEqual(Object.values(run3.outputs).sort());
    // The day's two superseded daily runs too: every object left is one a manifest names.
    const s3 = s3Client(cfg);
    const named: string[] = [];
    for (const o of [...(await listObjects(s3, cfg.s3.bucket, '_manifests/hourly/')), ...(await listObjects(s3, cfg.s3.bucket, '_manifests/daily/'))]) {
      named.push(...Object.values((await getJson<RunManifest>(s3, cfg.s3.bucket, o.key))!.outputs));
    }
    const left = [...(await listObjects(s3, cfg.s3.bucket, 'processed/')), ...(await listObjects(s3, cfg.s3.bucket, 'aggregated/'))].map((o) => o.key);
    expect(left.sort()).toEqual(named.sort());
    expect(later.deleted.sort()).toEqual(beforeGc.filter((k) => !named.includes(k)).sort());
    expect(await servingView()).toEqual(both);
  }, 240_000);
});
