/**
 * The batch layer end to end on real MinIO: a simulated 3-day dataset with
 * duplicates, late and invalid sends goes into the raw lake (as the lake writer
 * would write it: Parquet objects keyed by Kafka offsets, late data in a second
 * wave with dirty markers), hourly ×72 and daily ×3 run, and every published
 * table must equal an independent computation in plain SQL (test/support/expected-sql.ts) over
 * the simulator's NDJSON — validation, derived dimensions and de-duplication
 * included. Then: re-runs change no byte, N=1 and N=4 shards agree, compaction
 * (even interrupted) changes nothing, and bad input fails clearly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type DirtyMarker, type RunManifest, type Watermark } from '../../common/lake';
import { logger } from '../../common/log';
import { copyObject, deleteObjects, getJson, listObjects, putDirtyMarker, stageObjects } from '../../common/lake-io';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import {
  CorruptObjectError,
  MissingHoursError,
  NonRetryableBatchError,
  compactHour,
  computeWatermark,
  discardStaging,
  hoursOfDay,
  jobContext,
  listDirty,
  newRunId,
  prepareDaily,
  publishDaily,
  runDaily,
  runDailyShard,
  runHourly,
  withLocalRun,
  type JobContext,
} from '../../batch-layer/jobs';
import { Duck, sqlList } from '../../batch-layer/jobs/duck';
import { writeNdjson, type SimulatedSend } from '../../ingestion/simulator/generate';
import { defineExpected, expectedSql } from '../support/expected-sql';
import { isolatedConfig } from '../support/isolated';

const DAYS = ['2025-01-10', '2025-01-11', '2025-01-12'];
const START = Date.parse(`${DAYS[0]}T00:00:00Z`);
const END = Date.parse('2025-01-13T00:00:00Z');
/** The stand-in collector's clock for the "not more than 5 minutes in the future" rule. */
const CLOCK = END + 86_400_000;
const PARTITIONS = 3;
const HOURS = DAYS.flatMap(hoursOfDay);

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let ndjson: string;
let duck: Duck;
const sends: SimulatedSend[] = [];

function partitionOf(userId: string): number {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) | 0;
  return Math.abs(h) % PARTITIONS;
}

/** What the collector + lake writer would put in the lake: valid records with their Kafka position. */
function rawRows(): { row: RawRow; sendAt: number }[] {
  const offsets = new Array<number>(PARTITIONS).fill(0);
  const out: { row: RawRow; sendAt: number }[] = [];
  for (const send of sends) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(send.line);
    } catch {
      continue;
    }
    const result = validateEvent(parsed, CLOCK);
    if (!result.ok) continue;
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = partitionOf(record.user_id);
    out.push({ row: { record, partition, offset: String(offsets[partition]++) }, sendAt: send.sendAt });
  }
  return out;
}

/** One object per (hour, partition) of a wave, keyed by its offsets like the lake writer's. */
async function writeWave(rows: RawRow[]): Promise<string[]> {
  const groups = new Map<string, RawRow[]>();
  for (const r of rows) {
    const k = `${hourId(r.record.ts)}|${r.partition}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const s3 = s3Client(cfg);
  const hours = new Set<string>();
  let i = 0;
  for (const [k, group] of groups) {
    const [hour, p] = k.split('|');
    const key = lakePaths.rawObject(hour, Number(p), group[0].offset, group[group.length - 1].offset);
    const file = path.join(tmp, 'raw', `${i++}.parquet`);
    await writeRawParquet(group, file);
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: fs.readFileSync(file) }));
    hours.add(hour);
  }
  return [...hours].sort();
}

/**
 * What the manifests publish: `<kind> <period> <table>` -> the ETag of the object the
 * manifest names (each run writes its own keys, so the keys differ between runs; the bytes must not).
 */
async function outputEtags(): Promise<Map<string, string>> {
  const s3 = s3Client(cfg);
  const objects = [
    ...(await listObjects(s3, cfg.s3.bucket, 'processed/')),
    ...(await listObjects(s3, cfg.s3.bucket, 'aggregated/')),
  ];
  const etags = new Map(objects.map((o) => [o.key, o.etag]));
  const out = new Map<string, string>();
  for (const kind of ['hourly', 'daily'] as const) {
    for (const o of await listObjects(s3, cfg.s3.bucket, `_manifests/${kind}/`)) {
      const m = (await getJson<RunManifest>(s3, cfg.s3.bucket, o.key))!;
      for (const [table, key] of Object.entries(m.outputs)) {
        expect(etags.get(key), `${key} named by ${o.key}`).toBeDefined();
        out.set(`${m.kind} ${m.period} ${table}`, etags.get(key)!);
      }
    }
  }
  return out;
}

/** Downloads a published table for the given periods (the objects their manifests name) and exposes it as a DuckDB view `actual_<table>`. */
async function loadActual(zone: 'processed' | 'aggregated', table: string, periods: string[]): Promise<string> {
  const s3 = s3Client(cfg);
  const keys = await Promise.all(
    periods.map(async (p) => (await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest(p.length === 10 ? 'daily' : 'hourly', p)))!.outputs[table]),
  );
  expect(keys.every((k) => k?.startsWith(`${zone}/${table}/`))).toBe(true);
  const files = await stageObjects(s3, cfg.s3.bucket, keys, path.join(tmp, 'actual'));
  const view = `actual_${zone}_${table}`;
  await duck.run(`CREATE OR REPLACE VIEW ${view} AS SELECT * FROM read_parquet(${sqlList(files)}, hive_partitioning = false)`);
  return view;
}

/** Rows in one and not the other (multiset), both ways, over the expected columns. */
async function diff(actualView: string, expectedSql: string): Promise<{ missing: unknown[]; unexpected: unknown[]; actualRows: number }> {
  await duck.run(`CREATE OR REPLACE TEMP TABLE expected AS ${expectedSql}`);
  const cols = (await duck.rows(`DESCRIBE expected`)).map((r) => `"${r.column_name as string}"`).join(', ');
  const unexpected = await duck.json(`SELECT ${cols} FROM ${actualView} EXCEPT ALL SELECT ${cols} FROM expected LIMIT 5`);
  const missing = await duck.json(`SELECT ${cols} FROM expected EXCEPT ALL SELECT ${cols} FROM ${actualView} LIMIT 5`);
  const actualRows = await duck.scalar(`SELECT count(*) FROM ${actualView}`);
  return { missing, unexpected, actualRows };
}

async function expectEqual(zone: 'processed' | 'aggregated', table: string, periods: string[], expected: string): Promise<void> {
  const view = await loadActual(zone, table, periods);
  const d = await diff(view, expected);
  expect({ table, missing: d.missing, unexpected: d.unexpected }).toEqual({ table, missing: [], unexpected: [] });
  expect(d.actualRows).toBeGreaterThan(0);
}

beforeAll(async () => {
  cfg = await isolatedConfig('batch', { BATCH_SHARDS: '4' });
  ctx = jobContext(cfg, logger('batch-test'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'batch-it-'));
  ndjson = path.join(tmp, 'sends.ndjson');
  await writeNdjson(
    ndjson,
    { seed: 42, users: 40, startMs: START, endMs: END, lateFraction: 0.03, duplicateFraction: 0.05, invalidFraction: 0.03 },
    (s) => sends.push(s),
  );
  duck = await Duck.open({ threads: 2 });
  await defineExpected(duck, ndjson, CLOCK);
}, 120_000);

afterAll(async () => {
  duck?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});


describe('batch jobs over a simulated lake', () => {
  it('publish every hour and day, and recompute exactly what late data touched', async () => {
    for (const kind of ['valid', 'late', 'duplicate', 'invalid'] as const) expect(sends.filter((x) => x.kind === kind).length, kind).toBeGreaterThan(0);
    const rows = rawRows();
    // Wave 1: everything the lake had when the schedules ran; wave 2: what arrived after (late sends).
    const cut = END + 3_600_000;
    const wave1 = rows.filter((r) => r.sendAt < cut).map((r) => r.row);
    const wave2 = rows.filter((r) => r.sendAt >= cut).map((r) => r.row);
    expect(wave2.length).toBeGreaterThan(0);
    await writeWave(wave1);
    const now = END + 2 * 86_400_000;
    for (const hour of HOURS) await runHourly(ctx, hour, { now });
    for (const day of DAYS) await runDaily(ctx, day, { shards: 4, now });
    let wm = await getJson<Watermark>(s3Client(cfg), cfg.s3.bucket, lakePaths.watermark);
    expect(wm).toMatchObject({ hourlyEnd: END, dailyEnd: END });

    // The late wave lands in its event-time hours and marks them (and their days) dirty, as the lake writer does.
    const lateHours = await writeWave(wave2);
    const markedAt = Date.now();
    for (const hour of lateHours) {
      for (const [kind, period] of [['hourly', hour], ['daily', hour.slice(0, 10)]] as const) {
        const marker: DirtyMarker = { kind, period, markedAt, reason: 'late data' };
        await putDirtyMarker(s3Client(cfg), cfg.s3.bucket, marker);
      }
    }
    // Dirty hours no longer drag the watermark back to the first of them (issue 11): it ends with the newest clean hour.
    wm = await computeWatermark(ctx);
    expect(wm.hourlyEnd).toBe(Date.parse(`${HOURS.filter((h) => !lateHours.includes(h)).at(-1)}:00:00Z`) + 3_600_000);
    await expect(runDaily(ctx, lateHours[0].slice(0, 10), { now })).rejects.toBeInstanceOf(MissingHoursError);

    const dirty = await listDirty(ctx);
    expect(dirty.filter((d) => d.kind === 'hourly').map((d) => d.period)).toEqual(lateHours);
    for (const d of dirty.filter((m) => m.kind === 'hourly')) await runHourly(ctx, d.period, { now });
    for (const d of dirty.filter((m) => m.kind === 'daily')) await runDaily(ctx, d.period, { now });
    expect(await listDirty(ctx)).toEqual([]);
    wm = await getJson<Watermark>(s3Client(cfg), cfg.s3.bucket, lakePaths.watermark);
    expect(wm).toMatchObject({ hourlyEnd: END, dailyEnd: END });

    const manifest = (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('daily', DAYS[1])))!;
    expect(manifest.checks.every((c) => c.ok)).toBe(true);
    expect(manifest.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['every_hour_present', 'session_events_sum_to_processed']));
    const hourlyManifests = await Promise.all(HOURS.map((h) => getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', h))));
    const dups = hourlyManifests.reduce((n, m) => n + m!.duplicates!.natural, 0);
    expect(dups).toBe(sends.filter((s) => s.kind === 'duplicate').length);
    expect(hourlyManifests.reduce((n, m) => n + m!.duplicates!.synthetic, 0)).toBe(0);
  });

  it('processed/events and the hourly views equal the SQL over the NDJSON', async () => {
    await expectEqual('processed', 'events', HOURS, expectedSql.events());
    await expectEqual('aggregated', 'hourly_events', HOURS, expectedSql.hourlyEvents(HOURS));
    await expectEqual('aggregated', 'hourly_users', HOURS, expectedSql.hourlyUsers(HOURS));
    await expectEqual('aggregated', 'hourly_playback', HOURS, expectedSql.hourlyPlayback(HOURS));
  });

  it('sessions, activity, session metrics, clicks to play and top paths equal the SQL over the NDJSON', async () => {
    await expectEqual('processed', 'sessions', DAYS, expectedSql.sessions());
    await expectEqual('processed', 'user_daily_activity', DAYS, expectedSql.userDailyActivity());
    await expectEqual('aggregated', 'daily_sessions', DAYS, expectedSql.dailySessions());
    await expectEqual('aggregated', 'clicks_to_play', DAYS, expectedSql.clicksToPlay());
    await expectEqual('aggregated', 'top_paths', DAYS, expectedSql.topPaths());
  });

  it('binge users, retention cohorts and the one big table equal the SQL over the NDJSON', async () => {
    await expectEqual('aggregated', 'binge_users', DAYS, expectedSql.bingeUsers());
    const [{ n: binge }] = await duck.json(`SELECT count(*) AS n FROM actual_aggregated_binge_users`);
    expect(Number(binge)).toBeGreaterThan(0);
    await expectEqual('aggregated', 'retention_cohorts', DAYS, expectedSql.retentionCohorts());
    await expectEqual('aggregated', 'daily_aggregates_with_dimensions', DAYS, expectedSql.dailyAggregatesWithDimensions());
  });

  it('re-running an hour and a day changes no byte, and 1 shard gives the same tables as 4', async () => {
    const before = await outputEtags();
    const now = END + 2 * 86_400_000;
    const hourBefore = (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', HOURS[30])))!;
    const rerun = await runHourly(ctx, HOURS[30], { now });
    // The re-run published objects of its own (what a reader of the old manifest fetches is untouched), with the same bytes.
    for (const [table, key] of Object.entries(rerun.outputs)) expect(key).not.toBe(hourBefore.outputs[table]);
    await runDaily(ctx, DAYS[1], { shards: 4, now });
    await runDaily(ctx, DAYS[2], { shards: 1, now });
    // The separate steps a workflow runs on any worker hand the shards over through S3 `_staging/`,
    // where runDaily keeps them on local disk: the published bytes are the same.
    const runId = newRunId('daily', DAYS[1]);
    await prepareDaily(ctx, DAYS[1], runId, 3, { now });
    for (let shard = 0; shard < 3; shard++) await runDailyShard(ctx, DAYS[1], runId, shard, 3);
    await publishDaily(ctx, DAYS[1], runId, 3);
    const after = await outputEtags();
    expect(after.size).toBe(before.size);
    expect([...after].filter(([k, v]) => before.get(k) !== v)).toEqual([]);

    // A shard never guesses its input: a plan prepared in a local run lists no S3 inputs,
    // and a shard on another worker refuses it instead of computing an empty day.
    const localRun = newRunId('daily', DAYS[1]);
    await withLocalRun(ctx, (local) => prepareDaily(ctx, DAYS[1], localRun, 2, { now, local }));
    const refused = await runDailyShard(ctx, DAYS[1], localRun, 0, 2).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(NonRetryableBatchError);
    expect((refused as Error).message).toMatch(/lists no S3 inputs for shard 0/);
    await discardStaging(ctx, localRun);
  });

  it('compaction, even interrupted, changes nothing the batch layer publishes', async () => {
    const now = END + 2 * 86_400_000;
    const s3 = s3Client(cfg);
    const perHour = new Map<string, number>();
    for (const o of await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix)) {
      const m = /dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\//.exec(o.key)!;
      perHour.set(`${m[1]}T${m[2]}`, (perHour.get(`${m[1]}T${m[2]}`) ?? 0) + 1);
    }
    const [hour] = [...perHour].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0];
    const before = await outputEtags();
    const rawBefore = await listObjects(s3, cfg.s3.bucket, lakePaths.rawHourPrefix(hour));
    expect(rawBefore.length).toBeGreaterThan(1);
    // An interrupted compaction leaves a merged copy beside its inputs: simulate one with a plain copy.
    await copyObject(s3, cfg.s3.bucket, rawBefore[0].key, lakePaths.compactedObject(hour, 'interrupted', 0));
    const m1 = await runHourly(ctx, hour, { now });
    const result = await compactHour(ctx, hour, { now });
    expect(result).toMatchObject({ compacted: true, inputs: rawBefore.length });
    const again = await compactHour(ctx, hour, { now });
    expect(again.compacted).toBe(false);
    const rawAfter = await listObjects(s3, cfg.s3.bucket, lakePaths.rawHourPrefix(hour));
    expect(rawAfter.map((o) => o.key).sort()).toEqual([lakePaths.compactedObject(hour, 'interrupted', 0), ...result.outputs].sort());
    const m2 = await runHourly(ctx, hour, { now });
    expect(m2.duplicates).toEqual(m1.duplicates);
    expect(m2.rowCounts.events).toBe(m1.rowCounts.events);
    const after = await outputEtags();
    expect([...after].filter(([k, v]) => before.get(k) !== v)).toEqual([]);
  });

  it('fails clearly on a corrupt object, missing hours, and periods malformed or in the future', async () => {
    const s3 = s3Client(cfg);
    const key = lakePaths.rawObject('2025-01-09T05', 0, '0', '9');
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: 'PAR1 this is not parquet' }));
    const err = await runHourly(ctx, '2025-01-09T05').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptObjectError);
    expect((err as CorruptObjectError).key).toBe(key);
    expect((err as Error).message).toContain(key);
    expect(await getJson(s3, cfg.s3.bucket, lakePaths.manifest('hourly', '2025-01-09T05'))).toBeNull();

    const missing = await runDaily(ctx, '2025-01-13').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(MissingHoursError);
    expect((missing as MissingHoursError).hours).toEqual(hoursOfDay('2025-01-13'));
    await expect(runHourly(ctx, '2025-01-10T24')).rejects.toBeInstanceOf(NonRetryableBatchError);
    await expect(runHourly(ctx, '2025-1-10T01')).rejects.toBeInstanceOf(NonRetryableBatchError);
    await expect(runDaily(ctx, new Date(Date.now() + 86_400_000).toISOString().slice(0, 10))).rejects.toThrow(/in the future/);
    expect(await listObjects(s3, cfg.s3.bucket, '_staging/')).toEqual([]);
  });
});
