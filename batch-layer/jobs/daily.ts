/**
 * The daily job, in three steps a Temporal workflow can fan out:
 *   prepareDaily   checks the 24 hours are published, splits the day's processed
 *                  events, the previous day's late completes and the activity
 *                  history into N user-hash shards in one pass, keeping only the
 *                  columns the per-user SQL reads;
 *   runDailyShard  computes one shard's per-user tables (sessions, activity,
 *                  cohort and OBT partials, binge) — shards are independent;
 *   publishDaily   combines the shards (concatenation or sums; medians and paths
 *                  from the combined sessions), runs the checks, publishes.
 * The steps hand data to each other on local disk when they run in one process
 * (runDaily), through S3 `_staging/` between activities: handoff.ts.
 */
import path from 'node:path';
import { BINGE_WINDOW_MS } from '../../common/contract';
import { lakePaths, lakeTables, type QualityCheck, type RawRetentionRecord, type RunManifest, type Zone } from '../../common/lake';
import { getJson, listObjects, putDirtyMarker, putJson, withScratchDir, type LakeObject } from '../../common/lake-io';
import { checkpoint, hoursOfDay, keepAlive, mapLimit, newRunId, parsePeriod, previousDay, timed, type JobContext, type Period } from './context';
import type { FunnelDef } from '../../common/config';
import { sqlList, type Duck } from './duck';
import { MissingHoursError, MissingPreviousDaysError, NonRetryableBatchError, RawInputGoneError } from './errors';
import { handoffOf, withLocalRun, type DayRun, type LocalRun } from './handoff';
import { discardStaging, publish } from './publish';
import { blameCorrupt, stage, verifyParquet, type StagedObject } from './stage';
import { listDirty, listPublished } from './watermark';

export { withLocalRun, type LocalRun };

/** Published daily tables, in computing order: the sharded ones concatenated, the others computed at publish. */
export const DAILY_TABLES = lakeTables('daily');

/** What the shards compute for the per-day tables: summed at publish (cohorts, the one big table). */
const PARTIALS = ['retention_cohorts_partial', 'daily_aggregates_partial', 'retention_variants_partial'] as const;

/** Tables a shard computes: the sharded published tables, then the partials. */
const SHARD_TABLES = [...DAILY_TABLES.filter((t) => t.shard).map((t) => t.table), ...PARTIALS];

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
  /**
   * Handed over through S3: per shard, the `_staging/` keys of its input part files.
   * Absent when the steps hand over locally (runDaily).
   */
  shardInputs?: Record<ShardInput, string[]>[];
}

export interface DailyOptions {
  shards?: number;
  runId?: string;
  now?: number;
}

/** Steps given a local run hand over through it; without one, through S3 (the activities). */
export interface LocalHandoff {
  local?: LocalRun;
}

/** prepare -> every shard (one after another in this process) -> publish. */
export async function runDaily(ctx: JobContext, day: string, opts: DailyOptions = {}): Promise<RunManifest> {
  const shards = opts.shards ?? ctx.cfg.batch.shards;
  const runId = opts.runId ?? newRunId('daily', day);
  try {
    // One process runs every step: they share one DuckDB instead of handing files over through S3 `_staging/`.
    return await withLocalRun(ctx, async (local) => {
      await timed(ctx, 'prepare', () => prepareDaily(ctx, day, runId, shards, { now: opts.now, local }));
      for (let shard = 0; shard < shards; shard++) await timed(ctx, 'shards', () => runDailyShard(ctx, day, runId, shard, shards, { local }));
      return await timed(ctx, 'publish', () => publishDaily(ctx, day, runId, shards, { local }));
    });
  } catch (err) {
    await discardStaging(ctx, runId).catch((e: unknown) => ctx.log.warn({ err: (e as Error).message, runId }, 'could not remove staging'));
    throw err;
  }
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
  const ready = await readyInputs(ctx, day, period);
  log.info({ processedRows: ready.processedRows, prevHours: ready.objects.prev_completes.length, historyDays: ready.historyDays.length, shards }, 'daily prepare started');

  const handoff = handoffOf(ctx, dayRun(runId, shards), opts.local);
  const stopBeating = keepAlive(ctx, 'prepareDaily');
  const shardInputs = await withScratchDir(ctx.cfg, async (dir) => {
    const staged = {} as Record<ShardInput, StagedObject[]>;
    await timed(ctx, 'prepare.stage', async () => {
      for (const name of SHARD_INPUTS) staged[name] = await stage(ctx, ready.objects[name], path.join(dir, 'in'), 'stage');
    });
    const all = SHARD_INPUTS.flatMap((name) => staged[name]);
    const { duck, release } = await handoff.open(dir);
    try {
      await timed(ctx, 'prepare.verify', () => verifyParquet(duck, all));
      await duck.setVariables({ day_start: period.startMs, shards });
      await blameCorrupt(duck, all, async () => {
        for (const name of SHARD_INPUTS) {
          const files = staged[name].map((s) => s.file);
          // One streaming pass reads and hashes every row once and assigns it its shard.
          const split = `SELECT *, ${shardOf()} AS __shard FROM (${inputSelect(name, files.length > 0 ? sqlList(files) : null)})`;
          await timed(ctx, 'prepare.split', () => handoff.split(duck, name, split, dir));
          checkpoint(ctx, { step: 'split', input: name, shards });
        }
      });
      return await handoff.splitDone();
    } finally {
      await release();
    }
  }).finally(stopBeating);

  const plan: DailyPlan = {
    day,
    runId,
    startedAt,
    shards,
    inputs: SHARD_INPUTS.flatMap((name) => ready.objects[name]).map((o) => ({ key: o.key, etag: o.etag, size: o.size })),
    processedRows: ready.processedRows,
    hoursPublished: 24,
    historyDays: ready.historyDays,
    duplicates: ready.duplicates,
    ...(shardInputs ? { shardInputs: shardInputs as Record<ShardInput, string[]>[] } : {}),
  };
  await putJson(ctx.s3, ctx.bucket, planKey(runId), plan);
  return plan;
}

export interface ShardResult {
  shard: number;
  shards: number;
  rowCounts: Record<string, number>;
}

/** One user-hash shard's per-user daily work. Idempotent: a retry rewrites the same staged keys. */
export async function runDailyShard(ctx: JobContext, day: string, runId: string, shard: number, shards: number, opts: LocalHandoff = {}): Promise<ShardResult> {
  checkShard(shard, shards);
  const plan = await readPlan(ctx, day, runId, shards);
  const period = parsePeriod('daily', day, Number.POSITIVE_INFINITY);
  const handoff = handoffOf(ctx, dayRun(runId, shards), opts.local);
  const stopBeating = keepAlive(ctx, `runDailyShard ${shard}`);
  return withScratchDir(ctx.cfg, async (dir) => {
    const { duck, release } = await handoff.open(dir);
    try {
      const sources = await handoff.shardSources(duck, shard, plan.shardInputs, dir);
      await duck.run(`CREATE OR REPLACE VIEW day_events AS ${inputSelect('events', sources.events, { filtered: true })}`);
      await duck.run(`CREATE OR REPLACE VIEW prev_completes AS ${inputSelect('prev_completes', sources.prev_completes, { filtered: true })}`);
      await duck.run(`CREATE OR REPLACE VIEW history_activity AS ${inputSelect('history', sources.history, { filtered: true })}`);
      await duck.setVariables({ day: { date: day }, day_start: period.startMs, day_end: period.endMs });
      await createFunnelSteps(duck, ctx.cfg.funnels);
      const rowCounts: Record<string, number> = {};
      for (const table of SHARD_TABLES) {
        rowCounts[table] = await timed(ctx, `shard.compute.${table}`, () => duck.materialize(table));
        checkpoint(ctx, { step: 'compute', shard, table });
      }
      await handoff.keep(duck, shard, dir);
      ctx.log.info({ job: 'daily', day, runId, shard, shards, rowCounts }, 'daily shard computed');
      return { shard, shards, rowCounts };
    } finally {
      await release();
    }
  }).finally(stopBeating);
}

/** Combines the shards' outputs, checks them and publishes the day. */
export async function publishDaily(ctx: JobContext, day: string, runId: string, shards: number, opts: LocalHandoff = {}): Promise<RunManifest> {
  const plan = await readPlan(ctx, day, runId, shards);
  const period = parsePeriod('daily', day, Number.POSITIVE_INFINITY);
  const handoff = handoffOf(ctx, dayRun(runId, shards), opts.local);
  const stopBeating = keepAlive(ctx, 'publishDaily');
  return withScratchDir(ctx.cfg, async (dir) => {
    const { duck, release } = await handoff.open(dir);
    try {
      const sourceOf = await handoff.shardTables(duck, dir);
      await duck.setVariables({
        day: { date: day },
        day_start: period.startMs,
        day_end: period.endMs,
        processed_rows: plan.processedRows,
        hours_published: plan.hoursPublished,
      });
      for (const table of PARTIALS) await duck.run(`CREATE OR REPLACE VIEW ${table} AS SELECT * FROM ${sourceOf(table)}`);
      // funnel_days records the definitions the shards computed user_funnels with.
      await createFunnelSteps(duck, ctx.cfg.funnels);
      const rowCounts: Record<string, number> = {};
      for (const t of DAILY_TABLES) {
        await timed(ctx, `publish.combine.${t.table}`, async () => {
          if (t.shard) {
            await duck.run(`CREATE OR REPLACE TABLE ${t.table} AS SELECT * FROM ${sourceOf(t.table)} ORDER BY ${t.shard.orderBy}`);
            rowCounts[t.table] = await duck.scalar(`SELECT count(*) FROM ${t.table}`);
          } else {
            rowCounts[t.table] = await duck.materialize(t.table, t.sql ?? t.table);
          }
        });
        checkpoint(ctx, { step: 'combine', table: t.table });
      }
      const checks = (await timed(ctx, 'publish.checks', () => duck.select('quality_daily'))) as unknown as QualityCheck[];
      const [{ digest }] = await duck.json(`SELECT CAST(coalesce(bit_xor(md5_number_lower(user_id)), 0) AS VARCHAR) AS digest FROM user_daily_activity`);
      if (checks.every((c) => c.ok)) await cascadeToLaterDays(ctx, day, String(digest));
      const outputs: Record<string, { zone: Zone; file: string }> = {};
      for (const t of DAILY_TABLES) {
        const file = path.join(dir, 'out', `${t.table}.parquet`);
        await timed(ctx, 'publish.write', () => duck.writeParquet(t.table, file));
        outputs[t.table] = { zone: t.zone, file };
      }
      return await timed(ctx, 'publish.publish', () => publish(ctx, {
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
        activeUsersDigest: String(digest),
      }));
    } finally {
      await release();
    }
  }).finally(stopBeating);
}

/**
 * A re-run of a day that changes who was active that day (late data brought a new
 * user, say) makes every later published day stale: their retention cohorts and
 * first_seen_day read this day's activity. Those days are marked dirty, before this
 * day's manifest is written, so a crash in between cannot lose the cascade; the
 * late-data reconciliation then re-runs them in day order. A re-run that changes no
 * user (the usual late event of a known user) marks nothing.
 */
async function cascadeToLaterDays(ctx: JobContext, day: string, digest: string): Promise<void> {
  const previous = await getJson<RunManifest>(ctx.s3, ctx.bucket, lakePaths.manifest('daily', day));
  if (!previous || previous.activeUsersDigest === digest) return;
  const later = (await listPublished(ctx, 'daily')).filter((d) => d > day);
  const markedAt = Date.now();
  for (const period of later) {
    await putDirtyMarker(ctx.s3, ctx.bucket, { kind: 'daily', period, markedAt, reason: `the active users of ${day} changed in its re-run` });
  }
  if (later.length > 0) ctx.log.warn({ day, later }, 'active users changed in a re-run: later days marked dirty');
}

/** What prepare hands to the shards, from the published objects of the day, its previous day and its history. */
interface ReadyInputs {
  objects: Record<ShardInput, LakeObject[]>;
  processedRows: number;
  duplicates: { natural: number; synthetic: number };
  historyDays: string[];
}

/** The published hours, and whether an hour can be read by a daily run: published and not marked dirty (else it is run first). */
export async function usableHours(ctx: JobContext): Promise<{ published: Set<string>; usable: (hour: string) => boolean }> {
  const published = new Set(await listPublished(ctx, 'hourly'));
  const dirty = new Set((await listDirty(ctx)).filter((d) => d.kind === 'hourly').map((d) => d.period));
  return { published, usable: (h) => published.has(h) && !dirty.has(h) };
}

/**
 * The day's inputs, once it is ready: its 24 hours (and the previous day's last
 * hours a binge window reaches) published and clean, every earlier day with data
 * published, and no input removed by retention. Each input through its manifest,
 * never a fixed key: each names the one whole run that is current.
 */
async function readyInputs(ctx: JobContext, day: string, period: Period): Promise<ReadyInputs> {
  await refuseIfProcessedGone(ctx, day, day);
  const { published, usable } = await usableHours(ctx);
  const missing = hoursOfDay(day).filter((h) => !usable(h));
  // A binge window can start up to 4 h before midnight: those hours of the previous day count too,
  // unless the lake has no raw data for them at all.
  const prevDay = previousDay(day);
  const prevHours = hoursOfDay(prevDay).filter((h) => Date.parse(`${h}:00:00Z`) + 3_600_000 > period.startMs - BINGE_WINDOW_MS);
  const prevUsed: string[] = [];
  for (const h of prevHours) {
    if (usable(h)) prevUsed.push(h);
    else if ((await listObjects(ctx.s3, ctx.bucket, lakePaths.rawHourPrefix(h))).length > 0) missing.push(h);
  }
  if (missing.length > 0) throw new MissingHoursError(day, missing);

  const hourManifests = await Promise.all(hoursOfDay(day).map((h) => manifestOf(ctx, 'hourly', h)));
  const processedRows = hourManifests.reduce((n, m) => n + (m.rowCounts.events ?? 0), 0);
  const duplicates = hourManifests.reduce(
    (d, m) => ({ natural: d.natural + (m.duplicates?.natural ?? 0), synthetic: d.synthetic + (m.duplicates?.synthetic ?? 0) }),
    { natural: 0, synthetic: 0 },
  );
  const historyDays = (await listPublished(ctx, 'daily')).filter((d) => d < day);
  const historySet = new Set(historyDays);
  const unpublishedDays = [...new Set([...published].map((h) => h.slice(0, 10)))].filter((d) => d < day && !historySet.has(d)).sort();
  if (unpublishedDays.length > 0) throw new MissingPreviousDaysError(day, unpublishedDays);

  if (prevUsed.length > 0) await refuseIfProcessedGone(ctx, day, prevDay);
  const prevManifests = await Promise.all(prevUsed.map((h) => manifestOf(ctx, 'hourly', h)));
  const historyManifests = await mapLimit(historyDays, ctx.cfg.batch.ioConcurrency, (d) => manifestOf(ctx, 'daily', d));
  const objects: Record<ShardInput, LakeObject[]> = {
    events: await Promise.all(hourManifests.map((m) => outputOf(ctx, m, 'events'))),
    prev_completes: await Promise.all(prevManifests.map((m) => outputOf(ctx, m, 'events'))),
    history: await mapLimit(historyManifests, ctx.cfg.batch.ioConcurrency, (m) => outputOf(ctx, m, 'user_daily_activity')),
  };
  return { objects, processedRows, duplicates, historyDays };
}

type ShardInput = 'events' | 'prev_completes' | 'history';
const SHARD_INPUTS: readonly ShardInput[] = ['events', 'prev_completes', 'history'];

/**
 * What a shard reads of each input: only the columns the per-user SQL files use
 * (9 of processed/events' columns), and of the previous day only the completes a binge
 * window can reach. The split writes these selects; shards read them as they are.
 */
const INPUT_SELECT: Record<ShardInput, { columns: Record<string, string>; where?: string }> = {
  events: {
    columns: {
      event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', ts: 'BIGINT', device_type: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR',
      // The properties a funnel step may filter on.
      content_id: 'VARCHAR', page: 'VARCHAR',
    },
  },
  prev_completes: {
    columns: { user_id: 'VARCHAR', event_id: 'VARCHAR', ts: 'BIGINT' },
    where: `event_type = 'video_complete' AND ts >= getvariable('day_start') - getvariable('binge_window_ms')`,
  },
  history: { columns: { user_id: 'VARCHAR', day: 'DATE' } },
};

/** The select of one input over the given Parquet source (a file list), or its empty relation. */
function inputSelect(name: ShardInput, source: string | null, opts: { filtered?: boolean } = {}): string {
  const { columns, where } = INPUT_SELECT[name];
  if (source === null) return `SELECT ${Object.entries(columns).map(([c, t]) => `CAST(NULL AS ${t}) AS ${c}`).join(', ')} WHERE false`;
  const filter = where && opts.filtered !== true ? ` WHERE ${where}` : '';
  return `SELECT ${Object.keys(columns).join(', ')} FROM read_parquet(${source}, hive_partitioning = false)${filter}`;
}

/** The declared funnels (FUNNELS) as the table user_funnels.sql reads: one row per step, values bound. */
async function createFunnelSteps(duck: Duck, funnels: readonly FunnelDef[]): Promise<void> {
  await duck.run('CREATE OR REPLACE TABLE funnel_steps (funnel VARCHAR, step INTEGER, event_type VARCHAR, property VARCHAR, value VARCHAR, window_ms BIGINT)');
  for (const f of funnels) {
    for (const [i, s] of f.steps.entries()) {
      await duck.con.run('INSERT INTO funnel_steps VALUES ($1, $2, $3, $4, $5, $6)', [f.name, i + 1, s.event_type, s.property, s.value, f.window_ms]);
    }
  }
}

/**
 * The shard of a row's user, 0 <= shard < getvariable('shards'). Only prepareDaily
 * computes it, once, over all three inputs in one DuckDB, and the shards read what
 * it wrote; no other process ever recomputes it, so DuckDB's own hash (10×
 * cheaper than md5 over 10 M ids) is safe even if workers run different builds. The
 * published tables do not depend on which shard a user lands in (each combine is a
 * sort or a sum), which the 1-versus-4-shard test shows byte for byte.
 */
function shardOf(): string {
  return `hash(user_id) % getvariable('shards')`;
}

function dayRun(runId: string, shards: number): DayRun {
  return { runId, shards, inputs: SHARD_INPUTS, outputs: SHARD_TABLES };
}

function planKey(runId: string): string {
  return lakePaths.staging(runId, '_plan.json');
}

function checkShard(shard: number, shards: number): void {
  if (!Number.isInteger(shards) || shards < 1 || !Number.isInteger(shard) || shard < 0 || shard >= shards) {
    throw new NonRetryableBatchError(`shard ${shard} of ${shards} is not a valid shard (0 <= shard < shards)`);
  }
}

async function readPlan(ctx: JobContext, day: string, runId: string, shards: number): Promise<DailyPlan> {
  const plan = await getJson<DailyPlan>(ctx.s3, ctx.bucket, planKey(runId));
  if (!plan || plan.day !== day) throw new NonRetryableBatchError(`no daily plan for ${day} under run ${runId}: run prepareDaily first`);
  if (plan.shards !== shards) throw new NonRetryableBatchError(`run ${runId} was prepared for ${plan.shards} shards, not ${shards}`);
  return plan;
}

/** Processed retention removed `of`'s processed events: refuse rather than compute `day` from what is left. */
async function refuseIfProcessedGone(ctx: JobContext, day: string, of: string): Promise<void> {
  const removed = await getJson<RawRetentionRecord>(ctx.s3, ctx.bucket, lakePaths.processedRetention(of));
  if (removed) throw new RawInputGoneError(day, `processed retention removed the processed events of ${of} at ${removed.removedAt}`);
}

async function manifestOf(ctx: JobContext, kind: 'hourly' | 'daily', period: string): Promise<RunManifest> {
  const m = await getJson<RunManifest>(ctx.s3, ctx.bucket, lakePaths.manifest(kind, period));
  if (!m) throw new NonRetryableBatchError(`the ${kind} manifest of ${period} is missing`);
  return m;
}

/** The object a manifest names for a table, with its ETag (recorded as the daily run's input). */
async function outputOf(ctx: JobContext, manifest: RunManifest, table: string): Promise<LakeObject> {
  const key = manifest.outputs[table];
  if (!key) throw new NonRetryableBatchError(`the ${manifest.kind} manifest of ${manifest.period} names no ${table} output`);
  const [o] = (await listObjects(ctx.s3, ctx.bucket, key)).filter((x) => x.key === key);
  if (!o) throw new NonRetryableBatchError(`published object ${key} (${manifest.kind} ${manifest.period}, run ${manifest.runId}) is missing`);
  return o;
}
