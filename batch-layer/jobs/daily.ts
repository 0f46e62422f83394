/**
 * The daily job, in three steps a Temporal workflow can fan out:
 *   prepareDaily   checks the 24 hours are published, splits the day's processed
 *                  events, the previous day's late completes and the activity
 *                  history into N user-hash shards (staged in S3);
 *   runDailyShard  computes one shard's per-user tables (sessions, activity,
 *                  cohort and OBT partials, binge) — shards are independent;
 *   publishDaily   combines the shards (concatenation or sums; medians and paths
 *                  from the combined sessions), runs the checks, publishes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BINGE_WINDOW_MS } from '../../common/contract';
import { lakePaths, type QualityCheck, type RunManifest } from '../../common/lake';
import { getJson, listObjects, putJson, withScratchDir, type LakeObject } from '../lake-io';
import { bucketOf, checkpoint, hoursOfDay, keepAlive, newRunId, parsePeriod, previousDay, s3Of, type JobContext } from './context';
import { Duck, sqlList, sqlString } from './duck';
import { MissingHoursError, MissingPreviousDaysError, NonRetryableBatchError } from './errors';
import { discardStaging, publish } from './publish';
import { blameCorrupt, stage, uploadAll, verifyParquet, type StagedObject } from './stage';
import { listDirty, listPublished } from './watermark';

/** Tables a shard computes; the concatenated ones are published as they are combined. */
const SHARD_TABLES = ['sessions', 'user_daily_activity', 'retention_cohorts_partial', 'binge_users', 'daily_aggregates_partial'] as const;

/** Published daily tables: combined from the shards, in computing order. */
export const DAILY_TABLES = [
  { table: 'sessions', zone: 'processed', combine: 'concat', orderBy: 'user_id, session_idx' },
  { table: 'user_daily_activity', zone: 'processed', combine: 'concat', orderBy: 'user_id' },
  { table: 'binge_users', zone: 'aggregated', combine: 'concat', orderBy: 'user_id' },
  { table: 'retention_cohorts', zone: 'aggregated', combine: 'sql' },
  { table: 'daily_aggregates_with_dimensions', zone: 'aggregated', combine: 'sql' },
  { table: 'daily_sessions', zone: 'aggregated', combine: 'sql' },
  { table: 'clicks_to_play', zone: 'aggregated', combine: 'sql' },
  { table: 'top_paths', zone: 'aggregated', combine: 'sql' },
] as const;

const PARTIALS = ['retention_cohorts_partial', 'daily_aggregates_partial'] as const;

/** What prepareDaily decided; every later step reads it, so all shards see the same inputs. */
export interface DailyPlan {
  day: string;
  runId: string;
  startedAt: string;
  shards: number;
  inputs: RunManifest['inputs'];
  /** Rows of processed/events over the day's 24 hourly manifests. */
  processedRows: number;
  hoursPublished: number;
  historyDays: string[];
  duplicates: { natural: number; synthetic: number };
}

export interface DailyOptions {
  shards?: number;
  runId?: string;
  now?: number;
}

/**
 * When prepare, the shards and publish run in one process (runDaily, scripts,
 * tests), they hand each other their shard files through this local directory
 * instead of uploading them to `_staging/` and downloading them again. The
 * separate activities (prepareDay / runDayShard / publishDay on any worker) leave
 * it unset and go through S3. The files and the published bytes are the same
 * either way: the same statements write the same Parquet, only where it lies differs.
 */
export interface LocalHandoff {
  handoffDir?: string;
}

function handoffFile(handoffDir: string, key: string): string {
  return path.join(handoffDir, key);
}

function planKey(runId: string): string {
  return lakePaths.staging(runId, '_plan.json');
}

function shardKey(runId: string, shard: number, shards: number, name: string): string {
  return lakePaths.staging(runId, `_shards/${shard}-of-${shards}/${name}.parquet`);
}

function checkShard(shard: number, shards: number): void {
  if (!Number.isInteger(shards) || shards < 1 || !Number.isInteger(shard) || shard < 0 || shard >= shards) {
    throw new NonRetryableBatchError(`shard ${shard} of ${shards} is not a valid shard (0 <= shard < shards)`);
  }
}

async function readPlan(ctx: JobContext, day: string, runId: string): Promise<DailyPlan> {
  const plan = await getJson<DailyPlan>(s3Of(ctx), bucketOf(ctx), planKey(runId));
  if (!plan || plan.day !== day) throw new NonRetryableBatchError(`no daily plan for ${day} under run ${runId}: run prepareDaily first`);
  return plan;
}

async function objectOf(ctx: JobContext, key: string): Promise<LakeObject> {
  const [o] = (await listObjects(s3Of(ctx), bucketOf(ctx), key)).filter((x) => x.key === key);
  if (!o) throw new NonRetryableBatchError(`published object ${key} is missing`);
  return o;
}

/**
 * Checks the day is ready, stages its inputs once and writes them back as N
 * user-hash shards, so shard workers download only their own users.
 */
export async function prepareDaily(ctx: JobContext, day: string, runId: string, shards: number = ctx.cfg.batch.shards, opts: { now?: number } & LocalHandoff = {}): Promise<DailyPlan> {
  const period = parsePeriod('daily', day, opts.now);
  checkShard(0, shards);
  const startedAt = new Date().toISOString();
  const log = ctx.log.child({ job: 'daily', day, runId, step: 'prepare' });

  const published = new Set(await listPublished(ctx, 'hourly'));
  const dirtyHours = new Set((await listDirty(ctx)).filter((d) => d.kind === 'hourly').map((d) => d.period));
  const usable = (h: string) => published.has(h) && !dirtyHours.has(h);
  const missing = hoursOfDay(day).filter((h) => !usable(h));
  // A binge window can start up to 4 h before midnight: those hours of the previous day count too,
  // unless the lake has no raw data for them at all.
  const prevDay = previousDay(day);
  const prevHours = hoursOfDay(prevDay).filter((h) => Date.parse(`${h}:00:00Z`) + 3_600_000 > period.startMs - BINGE_WINDOW_MS);
  const prevUsed: string[] = [];
  for (const h of prevHours) {
    if (usable(h)) prevUsed.push(h);
    else if ((await listObjects(s3Of(ctx), bucketOf(ctx), lakePaths.rawHourPrefix(h))).length > 0) missing.push(h);
  }
  if (missing.length > 0) throw new MissingHoursError(day, missing);

  const hourManifests = await Promise.all(
    hoursOfDay(day).map(async (h) => (await getJson<RunManifest>(s3Of(ctx), bucketOf(ctx), lakePaths.manifest('hourly', h)))!),
  );
  const processedRows = hourManifests.reduce((n, m) => n + (m.rowCounts.events ?? 0), 0);
  const duplicates = hourManifests.reduce(
    (d, m) => ({ natural: d.natural + (m.duplicates?.natural ?? 0), synthetic: d.synthetic + (m.duplicates?.synthetic ?? 0) }),
    { natural: 0, synthetic: 0 },
  );
  const historyDays = (await listPublished(ctx, 'daily')).filter((d) => d < day);
  const historySet = new Set(historyDays);
  const unpublishedDays = [...new Set([...published].map((h) => h.slice(0, 10)))].filter((d) => d < day && !historySet.has(d)).sort();
  if (unpublishedDays.length > 0) throw new MissingPreviousDaysError(day, unpublishedDays);

  const dayObjects = await Promise.all(hoursOfDay(day).map((h) => objectOf(ctx, lakePaths.table('processed', 'events', h))));
  const prevObjects = await Promise.all(prevUsed.map((h) => objectOf(ctx, lakePaths.table('processed', 'events', h))));
  const historyObjects = await Promise.all(historyDays.map((d) => objectOf(ctx, lakePaths.table('processed', 'user_daily_activity', d))));
  log.info({ processedRows, prevHours: prevUsed.length, historyDays: historyDays.length, shards }, 'daily prepare started');

  const stopBeating = keepAlive(ctx, 'prepareDaily');
  await withScratchDir(ctx.cfg, async (dir) => {
    const dayStaged = await stage(ctx, dayObjects, path.join(dir, 'in'), 'stage');
    const prevStaged = await stage(ctx, prevObjects, path.join(dir, 'in'), 'stage');
    const historyStaged = await stage(ctx, historyObjects, path.join(dir, 'in'), 'stage');
    const all = [...dayStaged, ...prevStaged, ...historyStaged];
    const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
    try {
      await verifyParquet(duck, all);
      await duck.setVariables({ day_start: period.startMs, shards });
      await duck.run(`CREATE VIEW day_all AS SELECT * FROM read_parquet(${sqlList(dayStaged.map((s) => s.file))})`);
      await duck.run(
        prevStaged.length === 0
          ? `CREATE VIEW prev_all AS SELECT * FROM day_all WHERE false`
          : `CREATE VIEW prev_all AS SELECT * FROM read_parquet(${sqlList(prevStaged.map((s) => s.file))})
             WHERE event_type = 'video_complete' AND ts >= getvariable('day_start') - ${BINGE_WINDOW_MS}`,
      );
      await duck.run(
        historyStaged.length === 0
          ? `CREATE VIEW history_all AS SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS DATE) AS day WHERE false`
          : `CREATE VIEW history_all AS SELECT user_id, day FROM read_parquet(${sqlList(historyStaged.map((s) => s.file))})`,
      );
      const uploads: { key: string; file: string }[] = [];
      await blameCorrupt(duck, all, async () => {
        // One streaming pass per input reads and hashes every row once, writing it to its shard's
        // local (uncompressed, unordered) part files; each shard file is then those rows in order,
        // exactly what `WHERE <its hash> ORDER BY <order>` over the input gives, without
        // re-reading and re-hashing the whole day once per shard. Only one shard is sorted in
        // memory at a time (the partitioned write buffers a little per shard).
        for (const [name, view, order] of [
          ['events', 'day_all', 'ts, event_id'],
          ['prev_completes', 'prev_all', 'ts, event_id'],
          ['history', 'history_all', 'user_id, day'],
        ] as const) {
          const parts = path.join(dir, 'split', name);
          // One shard is the whole input: nothing to split.
          if (shards > 1) {
            await fs.promises.mkdir(path.dirname(parts), { recursive: true });
            await duck.run(
              `COPY (SELECT *, ${shardOf()} AS __shard FROM ${view}) TO ${sqlString(parts)} (FORMAT parquet, COMPRESSION uncompressed, PARTITION_BY (__shard))`,
            );
          }
          for (let shard = 0; shard < shards; shard++) {
            const key = shardKey(runId, shard, shards, name);
            const file = opts.handoffDir ? handoffFile(opts.handoffDir, key) : path.join(dir, 'out', `${shard}`, `${name}.parquet`);
            const partDir = path.join(parts, `__shard=${shard}`);
            const source = shards === 1
              ? view
              : fs.existsSync(partDir)
              ? `read_parquet(${sqlString(path.join(partDir, '*.parquet'))}, hive_partitioning = false)`
              : `(SELECT * FROM ${view} WHERE false)`;
            await duck.run(`CREATE OR REPLACE TABLE shard_part AS SELECT * FROM ${source} ORDER BY ${order}`);
            await duck.writeParquet('shard_part', file);
            if (!opts.handoffDir) uploads.push({ key, file });
            checkpoint(ctx, { step: 'split', input: name, shard, shards });
          }
          await duck.run('DROP TABLE IF EXISTS shard_part');
          await fs.promises.rm(parts, { recursive: true, force: true });
        }
      });
      await uploadAll(ctx, uploads, 'upload');
    } finally {
      duck.close();
    }
  }).finally(stopBeating);

  const plan: DailyPlan = {
    day,
    runId,
    startedAt,
    shards,
    inputs: [...dayObjects, ...prevObjects, ...historyObjects].map((o) => ({ key: o.key, etag: o.etag, size: o.size })),
    processedRows,
    hoursPublished: 24,
    historyDays,
    duplicates,
  };
  await putJson(s3Of(ctx), bucketOf(ctx), planKey(runId), plan);
  return plan;
}

/**
 * A user's shard: a portable hash (the low 64 bits of md5), so any worker with any
 * DuckDB build agrees. (md5_number's 128-bit modulo is ~15× slower.)
 */
export function shardPredicate(shard: number): string {
  return `${shardOf()} = ${shard}`;
}

/** The shard of a row's user, 0 <= shard < getvariable('shards'). */
export function shardOf(): string {
  return `md5_number_lower(user_id) % getvariable('shards')`;
}

export interface ShardResult {
  shard: number;
  shards: number;
  rowCounts: Record<string, number>;
}

/** One user-hash shard's per-user daily work. Idempotent: a retry rewrites the same staged keys. */
export async function runDailyShard(ctx: JobContext, day: string, runId: string, shard: number, shards: number, opts: LocalHandoff = {}): Promise<ShardResult> {
  checkShard(shard, shards);
  const plan = await readPlan(ctx, day, runId);
  if (plan.shards !== shards) throw new NonRetryableBatchError(`run ${runId} was prepared for ${plan.shards} shards, not ${shards}`);
  const period = parsePeriod('daily', day, Number.POSITIVE_INFINITY);
  const stopBeating = keepAlive(ctx, `runDailyShard ${shard}`);
  return withScratchDir(ctx.cfg, async (dir) => {
    const keys = ['events', 'prev_completes', 'history'].map((name) => ({ key: shardKey(runId, shard, shards, name), etag: '', size: 0 }));
    const handoffDir = opts.handoffDir;
    // Handed over locally, the files are the ones prepareDaily wrote in this process: nothing to download or re-verify.
    const [events, prev, history] = handoffDir
      ? keys.map((k) => ({ ...k, file: handoffFile(handoffDir, k.key) }))
      : await stage(ctx, keys, path.join(dir, 'in'), 'stage');
    const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
    try {
      if (!handoffDir) await verifyParquet(duck, [events, prev, history]);
      await duck.run(`CREATE VIEW day_events AS SELECT * FROM read_parquet(${sqlString(events.file)})`);
      await duck.run(`CREATE VIEW prev_completes AS SELECT * FROM read_parquet(${sqlString(prev.file)})`);
      await duck.run(`CREATE VIEW history_activity AS SELECT * FROM read_parquet(${sqlString(history.file)})`);
      await duck.setVariables({ day: { date: day }, day_start: period.startMs, day_end: period.endMs });
      const rowCounts: Record<string, number> = {};
      const uploads: { key: string; file: string }[] = [];
      for (const table of SHARD_TABLES) {
        rowCounts[table] = await duck.materialize(table);
        const key = shardKey(runId, shard, shards, table);
        const file = handoffDir ? handoffFile(handoffDir, key) : path.join(dir, 'out', `${table}.parquet`);
        await duck.writeParquet(table, file);
        if (!handoffDir) uploads.push({ key, file });
        checkpoint(ctx, { step: 'compute', shard, table });
      }
      await uploadAll(ctx, uploads, 'upload');
      ctx.log.info({ job: 'daily', day, runId, shard, shards, rowCounts }, 'daily shard computed');
      return { shard, shards, rowCounts };
    } finally {
      duck.close();
    }
  }).finally(stopBeating);
}

/** Combines the shards' outputs, checks them and publishes the day. */
export async function publishDaily(ctx: JobContext, day: string, runId: string, shards: number, opts: LocalHandoff = {}): Promise<RunManifest> {
  const plan = await readPlan(ctx, day, runId);
  if (plan.shards !== shards) throw new NonRetryableBatchError(`run ${runId} was prepared for ${plan.shards} shards, not ${shards}`);
  const period = parsePeriod('daily', day, Number.POSITIVE_INFINITY);
  const stopBeating = keepAlive(ctx, 'publishDaily');
  return withScratchDir(ctx.cfg, async (dir) => {
    const wanted = Array.from({ length: shards }, (_, shard) => SHARD_TABLES.map((table) => ({ shard, table, key: shardKey(runId, shard, shards, table) }))).flat();
    const handoffDir = opts.handoffDir;
    let staged: StagedObject[];
    try {
      if (handoffDir) {
        staged = wanted.map((w) => ({ key: w.key, etag: '', size: 0, file: handoffFile(handoffDir, w.key) }));
        const absent = staged.filter((s) => !fs.existsSync(s.file));
        if (absent.length > 0) throw new Error(`no local shard output ${absent[0].key}`);
      } else {
        staged = await stage(ctx, wanted.map((w) => ({ key: w.key, etag: '', size: 0 })), path.join(dir, 'in'), 'stage');
      }
    } catch (err) {
      throw new NonRetryableBatchError(`shard outputs of run ${runId} are incomplete (run every runDailyShard first): ${(err as Error).message}`);
    }
    const filesOf = (table: string) => sqlList(staged.filter((_, i) => wanted[i].table === table).map((s) => s.file));
    const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
    try {
      if (!handoffDir) await verifyParquet(duck, staged);
      await duck.setVariables({
        day: { date: day },
        day_start: period.startMs,
        day_end: period.endMs,
        processed_rows: plan.processedRows,
        hours_published: plan.hoursPublished,
      });
      for (const table of PARTIALS) await duck.run(`CREATE VIEW ${table} AS SELECT * FROM read_parquet(${filesOf(table)})`);
      const rowCounts: Record<string, number> = {};
      for (const t of DAILY_TABLES) {
        if (t.combine === 'concat') {
          await duck.run(`CREATE TABLE ${t.table} AS SELECT * FROM read_parquet(${filesOf(t.table)}) ORDER BY ${t.orderBy}`);
          rowCounts[t.table] = await duck.scalar(`SELECT count(*) FROM ${t.table}`);
        } else {
          rowCounts[t.table] = await duck.materialize(t.table);
        }
        checkpoint(ctx, { step: 'combine', table: t.table });
      }
      const checks = (await duck.select('quality_daily')) as unknown as QualityCheck[];
      const outputs: Record<string, { staged: string; final: string }> = {};
      const uploads: { key: string; file: string }[] = [];
      for (const t of DAILY_TABLES) {
        const file = path.join(dir, 'out', `${t.table}.parquet`);
        await duck.writeParquet(t.table, file);
        const final = lakePaths.table(t.zone, t.table, day);
        outputs[t.table] = { staged: lakePaths.staging(runId, final), final };
        uploads.push({ key: outputs[t.table].staged, file });
      }
      await uploadAll(ctx, uploads, 'upload');
      return await publish(ctx, {
        kind: 'daily',
        period: day,
        runId,
        startedAt: plan.startedAt,
        inputs: plan.inputs,
        outputs,
        rowCounts: { processed_events: plan.processedRows, ...rowCounts },
        checks,
        duplicates: plan.duplicates,
        shards,
      });
    } finally {
      duck.close();
    }
  }).finally(stopBeating);
}

/** prepare -> every shard (one after another in this process) -> publish. */
export async function runDaily(ctx: JobContext, day: string, opts: DailyOptions = {}): Promise<RunManifest> {
  const shards = opts.shards ?? ctx.cfg.batch.shards;
  const runId = opts.runId ?? newRunId('daily', day);
  try {
    // One process runs every step, so the shard files stay on local disk instead of going through S3 `_staging/`.
    return await withScratchDir(ctx.cfg, async (handoffDir) => {
      await prepareDaily(ctx, day, runId, shards, { now: opts.now, handoffDir });
      for (let shard = 0; shard < shards; shard++) {
        await runDailyShard(ctx, day, runId, shard, shards, { handoffDir });
        // The shard's input split is no longer needed; free the disk before the next shard.
        for (const name of ['events', 'prev_completes', 'history']) {
          await fs.promises.rm(handoffFile(handoffDir, shardKey(runId, shard, shards, name)), { force: true });
        }
      }
      return await publishDaily(ctx, day, runId, shards, { handoffDir });
    });
  } catch (err) {
    await discardStaging(ctx, runId).catch((e: unknown) => ctx.log.warn({ err: (e as Error).message, runId }, 'could not remove staging'));
    throw err;
  }
}

