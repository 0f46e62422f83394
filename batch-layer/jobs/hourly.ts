/**
 * The hourly job: raw objects of one event-time hour -> processed/events (each
 * event_id once across the hours of the dedupe horizon, see dedupe.ts), the hour's
 * event-id index and the hourly batch views, gated by data-quality checks.
 */
import fs from 'node:fs';
import path from 'node:path';
import { lakePaths, lakeTables, type QualityCheck, type RunManifest, type Zone } from '../../common/lake';
import { listObjects, withScratchDir } from '../../common/lake-io';
import { checkpoint, keepAlive, newRunId, parsePeriod, timed, type JobContext } from './context';
import { Duck, emptyRawSelect, parquetColumns, rawColumnsSelect, sqlList } from './duck';
import { IndexCache, declareIndexes, markDedupeConflicts, neighbourIndexes } from './dedupe';
import { publish } from './publish';
import { computeWatermark } from './watermark';
import { assertRawComplete } from './raw-guard';
import { blameCorrupt, stage, verifyParquet } from './stage';

/** Output tables of the hourly job, in computing order (after `hour_firsts`, the hour's first copies). */
export const HOURLY_TABLES = lakeTables('hourly');

export interface RunOptions {
  /** Give one to make the staging prefix predictable (a Temporal activity passes its workflow's). */
  runId?: string;
  /** The clock that decides whether the period is in the future. */
  now?: number;
}

export async function runHourly(ctx: JobContext, hour: string, opts: RunOptions = {}): Promise<RunManifest> {
  return computeHour(ctx, hour, opts);
}

/** Hours run one after another in one DuckDB and scratch dir (runHours). */
interface SharedRun {
  duck: Duck;
  dir: string;
  indexes: IndexCache;
}

/**
 * Runs several hours one after another in this process, as runHourly would one by
 * one, in one DuckDB and scratch dir: each published neighbour index is fetched and
 * read once for all of them, and the watermark is computed once at the end. A failed
 * hour does not stop the others; the first failure is thrown once they are done.
 * What each hour publishes is what runHourly would (backfill-equivalence.test.ts).
 */
export async function runHours(ctx: JobContext, hours: readonly string[], opts: { runIdOf?: (hour: string) => string; now?: number } = {}): Promise<RunManifest[]> {
  for (const hour of hours) parsePeriod('hourly', hour, opts.now);
  const manifests: RunManifest[] = [];
  let failure: unknown;
  await withScratchDir(ctx.cfg, async (dir) => {
    const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
    const run: SharedRun = { duck, dir, indexes: new IndexCache() };
    try {
      for (const hour of hours) {
        checkpoint(ctx, { step: 'hours', hour, done: manifests.length, total: hours.length });
        try {
          manifests.push(await computeHour(ctx, hour, { now: opts.now, runId: opts.runIdOf?.(hour) }, run));
        } catch (err) {
          if (ctx.signal?.aborted) throw err;
          ctx.log.error({ hour, err: (err as Error).message }, 'hour failed; the others go on');
          failure ??= err;
        }
      }
    } finally {
      duck.close();
    }
  });
  if (manifests.length > 0) await computeWatermark(ctx);
  if (failure !== undefined) throw failure;
  return manifests;
}

async function computeHour(ctx: JobContext, hour: string, opts: RunOptions, shared?: SharedRun): Promise<RunManifest> {
  const period = parsePeriod('hourly', hour, opts.now);
  const startedAt = new Date().toISOString();
  const runId = opts.runId ?? newRunId('hourly', hour);
  const log = ctx.log.child({ job: 'hourly', hour, runId });
  const inputs = await timed(ctx, 'hourly.list', async () => (await listObjects(ctx.s3, ctx.bucket, lakePaths.rawHourPrefix(hour))).filter((o) => o.key.endsWith('.parquet')));
  await timed(ctx, 'hourly.guard', () => assertRawComplete(ctx, hour, inputs));
  log.info({ objects: inputs.length, bytes: inputs.reduce((n, o) => n + o.size, 0) }, 'hourly run started');
  checkpoint(ctx, { step: 'list', objects: inputs.length });

  const stopBeating = keepAlive(ctx, 'hourly');
  const inDir = <T>(fn: (dir: string) => Promise<T>): Promise<T> => {
    if (!shared) return withScratchDir(ctx.cfg, fn);
    const dir = path.join(shared.dir, hour);
    return fn(dir).finally(() => fs.promises.rm(dir, { recursive: true, force: true }));
  };
  return inDir(async (dir) => {
    const staged = await timed(ctx, 'hourly.stage', () => stage(ctx, inputs, path.join(dir, 'in'), 'stage'));
    const duck = shared?.duck ?? (await timed(ctx, 'hourly.open', () => Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal })));
    try {
      await verifyParquet(duck, staged);
      const files = staged.map((s) => s.file);
      await duck.run(
        `CREATE OR REPLACE VIEW raw_events AS ${
          staged.length === 0
            ? emptyRawSelect()
            : `SELECT ${rawColumnsSelect(await parquetColumns(duck, files))} FROM read_parquet(${sqlList(files)}, union_by_name = true)`
        }`,
      );
      await duck.setVariables({ hour, hour_start: period.startMs, hour_end: period.endMs });
      const neighbours = await timed(ctx, 'hourly.neighbours', () => neighbourIndexes(ctx, hour));
      await timed(ctx, 'hourly.indexes', () => declareIndexes(ctx, duck, 'neighbour_ids', neighbours, dir, shared?.indexes));
      checkpoint(ctx, { step: 'compute', neighbours: neighbours.length });
      const rowCounts: Record<string, number> = {};
      await timed(ctx, 'hourly.compute', () => blameCorrupt(duck, staged, async () => {
        rowCounts.raw_events = await duck.scalar('SELECT count(*) FROM raw_events');
        await duck.materialize('hour_firsts', 'events');
        for (const t of HOURLY_TABLES) {
          rowCounts[t.table] = await duck.materialize(t.table, t.sql ?? t.table);
          checkpoint(ctx, { step: 'compute', table: t.table });
        }
      }));
      // Within the hour, and copies of this hour another hour received first.
      const [dups] = await duck.select('raw_duplicates');
      const [across] = await duck.select('cross_hour_duplicates');
      const duplicates = { natural: Number(dups.natural) + Number(across.natural), synthetic: Number(dups.synthetic) + Number(across.synthetic) };
      const checks = (await duck.select('quality_hourly')) as unknown as QualityCheck[];

      const outputs: Record<string, { zone: Zone; file: string }> = {};
      for (const t of HOURLY_TABLES) {
        const file = path.join(dir, 'out', `${t.table}.parquet`);
        await timed(ctx, 'hourly.write', () => duck.writeParquet(t.table, file));
        outputs[t.table] = { zone: t.zone, file };
      }
      const manifest = await timed(ctx, 'hourly.publish', () => publish(ctx, {
        kind: 'hourly',
        period: hour,
        runId,
        startedAt,
        inputs: inputs.map((o) => ({ key: o.key, etag: o.etag, size: o.size })),
        outputs,
        rowCounts,
        checks,
        duplicates,
        // Several hours in a row: runHours computes it once after the last.
        deferWatermark: shared !== undefined,
      }));
      const conflicts = await timed(ctx, 'hourly.conflicts', () => markDedupeConflicts(ctx, duck, hour, neighbours, dir, shared?.indexes));
      if (conflicts.length > 0) await computeWatermark(ctx);
      return manifest;
    } finally {
      if (!shared) duck.close();
    }
  }).finally(stopBeating);
}
