/**
 * How the daily job's steps hand data to each other: the split of the inputs
 * (prepare -> shards) and the shards' tables (shards -> publish). Two ways, one
 * interface, so daily.ts says what a step does and not where its data lies:
 *
 *   local   prepare, the shards and publish run in one process (runDaily, scripts,
 *           tests) and share one DuckDB and scratch dir: the split's part files
 *           stay on local disk, uncompressed; each shard computes into its own
 *           schema (`shard_<k>`) and publish reads the tables from there, so
 *           nothing goes through S3 and the shards' outputs never leave memory.
 *   staged  each step is its own activity, on any worker: the split's part files
 *           and the shards' outputs go through S3 `_staging/<runId>/` (zstd), and
 *           the plan lists the part files' keys.
 *
 * The published bytes are the same either way (test/integration/batch-jobs.test.ts
 * compares ETags).
 */
import fs from 'node:fs';
import path from 'node:path';
import { lakePaths } from '../../common/lake';
import { withScratchDir } from '../../common/lake-io';
import { timed, type JobContext } from './context';
import { Duck, sqlList, sqlString } from './duck';
import { NonRetryableBatchError } from './errors';
import { stage, uploadAll, verifyParquet, type StagedObject } from './stage';

/** Per shard, per input: the `_staging/` keys of its part files (the staged hand-over's part of the plan). */
export type ShardInputKeys = Record<string, string[]>[];

/** One day run as the hand-over sees it. */
export interface DayRun {
  runId: string;
  shards: number;
  /** The inputs prepare splits by user hash. */
  inputs: readonly string[];
  /** The tables each shard computes for publish. */
  outputs: readonly string[];
}

export interface Handoff {
  /** The DuckDB a step runs in; `release` when the step ends (a local run's stays open for the next step). */
  open(dir: string): Promise<{ duck: Duck; release: () => Promise<void> }>;
  /** prepare: writes the rows of `select` (with their `__shard` column) as input `name`'s part files. */
  split(duck: Duck, name: string, select: string, dir: string): Promise<void>;
  /** prepare, once every input is split: makes the parts reachable for the shards; what the plan must list of them. */
  splitDone(): Promise<ShardInputKeys | undefined>;
  /** shard: per input, the Parquet source (for read_parquet) of this shard's rows, or null when it has none. */
  shardSources(duck: Duck, shard: number, planned: ShardInputKeys | undefined, dir: string): Promise<Record<string, string | null>>;
  /** shard: hands the tables it computed on to publish. */
  keep(duck: Duck, shard: number, dir: string): Promise<void>;
  /** publish: a relation of each shard table over every shard. */
  shardTables(duck: Duck, dir: string): Promise<(table: string) => string>;
}

/** The steps of one day run in this process: one DuckDB and one scratch dir for all of them. */
export interface LocalRun {
  duck: Duck;
  /** Scratch space of the run: the split's part files lie here. */
  dir: string;
}

/** One DuckDB for every step of a day run in this process, spilling to a scratch dir, closed afterwards. */
export async function withLocalRun<T>(ctx: JobContext, fn: (local: LocalRun) => Promise<T>): Promise<T> {
  return withScratchDir(ctx.cfg, async (dir) => {
    const duck = await openDuck(ctx, dir);
    try {
      return await fn({ duck, dir });
    } finally {
      duck.close();
    }
  });
}

/** The local hand-over when the steps run in `local`, the staged one otherwise. */
export function handoffOf(ctx: JobContext, run: DayRun, local?: LocalRun): Handoff {
  return local ? localHandoff(run, local) : stagedHandoff(ctx, run);
}

function openDuck(ctx: JobContext, dir: string): Promise<Duck> {
  return Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
}

/** Writes the split's rows into one directory per shard (`__shard=<k>/`). */
async function copySplit(duck: Duck, select: string, parts: string, compression: 'uncompressed' | 'zstd'): Promise<void> {
  await fs.promises.rm(parts, { recursive: true, force: true });
  await fs.promises.mkdir(path.dirname(parts), { recursive: true });
  await duck.run(`COPY (${select}) TO ${sqlString(parts)} (FORMAT parquet, COMPRESSION ${compression}, PARTITION_BY (__shard))`);
}

function localHandoff(run: DayRun, local: LocalRun): Handoff {
  // Exists from prepare (even for a day without rows) until publish.
  const splitRoot = path.join(local.dir, 'split');
  // A directory per shard of part files, so a shard's statements scan only its own rows
  // (filtering one in-memory table of the whole day instead cost each statement a full scan).
  const splitDir = (name: string) => path.join(splitRoot, name);
  const schema = (shard: number) => `shard_${shard}`;
  return {
    // A shard switched to its schema; every step leaves the run's DuckDB in main.
    open: async () => ({ duck: local.duck, release: () => local.duck.run('USE main') }),
    // Read once, by the shards in this process, from this disk: no codec.
    split: (duck, name, select) => copySplit(duck, select, splitDir(name), 'uncompressed'),
    splitDone: async () => undefined,
    async shardSources(duck, shard) {
      if (!fs.existsSync(splitRoot)) throw new NonRetryableBatchError(`run ${run.runId} was not prepared in this local run: run prepareDaily with it first`);
      const sources: Record<string, string | null> = {};
      for (const name of run.inputs) {
        const partDir = path.join(splitDir(name), `__shard=${shard}`);
        // A shard without rows of an input has no part directory.
        sources[name] = fs.existsSync(partDir) ? sqlString(path.join(partDir, '*.parquet')) : null;
      }
      // The SQL files name their inputs and outputs without a schema: they resolve in the shard's own.
      await duck.run(`CREATE SCHEMA IF NOT EXISTS ${schema(shard)}`);
      await duck.run(`USE ${schema(shard)}`);
      return sources;
    },
    // The tables stay in the shard's schema.
    keep: async () => {},
    async shardTables(duck) {
      const present = new Set((await duck.rows(`SELECT schema_name || '.' || table_name AS t FROM duckdb_tables()`)).map((r) => r.t));
      const missing = Array.from({ length: run.shards }, (_, shard) => run.outputs.map((table) => `${schema(shard)}.${table}`)).flat().filter((t) => !present.has(t));
      if (missing.length > 0) throw new NonRetryableBatchError(`shard outputs of run ${run.runId} are incomplete (run every runDailyShard first): no ${missing[0]}`);
      // The split is not needed any more.
      await fs.promises.rm(splitRoot, { recursive: true, force: true });
      return (table) => `(${Array.from({ length: run.shards }, (_, shard) => `SELECT * FROM ${schema(shard)}.${table}`).join(' UNION ALL ')})`;
    },
  };
}

function stagedHandoff(ctx: JobContext, run: DayRun): Handoff {
  const { runId, shards } = run;
  const shardPrefix = (shard: number) => `_shards/${shard}-of-${shards}`;
  const outputKey = (shard: number, table: string) => lakePaths.staging(runId, `${shardPrefix(shard)}/${table}.parquet`);
  const planned: ShardInputKeys = Array.from({ length: shards }, () => Object.fromEntries(run.inputs.map((name) => [name, [] as string[]])));
  const uploads: { key: string; file: string }[] = [];
  return {
    async open(dir) {
      const duck = await openDuck(ctx, dir);
      return { duck, release: async () => duck.close() };
    },
    async split(duck, name, select, dir) {
      const parts = path.join(dir, 'split', name);
      // Between workers the parts go under _staging/, zstd like the rest of the lake.
      await copySplit(duck, select, parts, 'zstd');
      for (let shard = 0; shard < shards; shard++) {
        // A shard without rows of this input has no part directory.
        const partDir = path.join(parts, `__shard=${shard}`);
        if (!fs.existsSync(partDir)) continue;
        for (const file of (await fs.promises.readdir(partDir)).filter((f) => f.endsWith('.parquet')).sort()) {
          const key = lakePaths.staging(runId, `${shardPrefix(shard)}/inputs/${name}/${file}`);
          uploads.push({ key, file: path.join(partDir, file) });
          planned[shard][name].push(key);
        }
      }
    },
    async splitDone() {
      await timed(ctx, 'prepare.upload', () => uploadAll(ctx, uploads, 'upload'));
      return planned;
    },
    async shardSources(duck, shard, plan, dir) {
      const inputs = plan?.[shard];
      if (!inputs) throw new NonRetryableBatchError(`the plan of run ${runId} lists no S3 inputs for shard ${shard} (prepared in one process, or by an older version): prepare the day again`);
      const sources: Record<string, string | null> = {};
      for (const name of run.inputs) {
        const staged = await stage(ctx, inputs[name].map((key) => ({ key, etag: '', size: 0 })), path.join(dir, 'in'), 'stage');
        await verifyParquet(duck, staged);
        sources[name] = staged.length > 0 ? sqlList(staged.map((s) => s.file)) : null;
      }
      return sources;
    },
    async keep(duck, shard, dir) {
      const files: { key: string; file: string }[] = [];
      for (const table of run.outputs) {
        const file = path.join(dir, 'out', `${table}.parquet`);
        await timed(ctx, 'shard.write', () => duck.writeParquet(table, file));
        files.push({ key: outputKey(shard, table), file });
      }
      await uploadAll(ctx, files, 'upload');
    },
    async shardTables(duck, dir) {
      const wanted = Array.from({ length: shards }, (_, shard) => run.outputs.map((table) => ({ table, key: outputKey(shard, table) }))).flat();
      let staged: StagedObject[];
      try {
        staged = await stage(ctx, wanted.map((w) => ({ key: w.key, etag: '', size: 0 })), path.join(dir, 'in'), 'stage');
      } catch (err) {
        throw new NonRetryableBatchError(`shard outputs of run ${runId} are incomplete (run every runDailyShard first): ${(err as Error).message}`);
      }
      await verifyParquet(duck, staged);
      return (table) => `read_parquet(${sqlList(staged.filter((_, i) => wanted[i].table === table).map((s) => s.file))})`;
    },
  };
}
