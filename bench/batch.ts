/**
 * Batch-layer benchmark (issue 4 §4): N events in one day in the lake (raw
 * Parquet objects per hour × Kafka partition, 1% duplicates), then
 *   - the 24 hourly jobs and the daily job (wall time, peak RSS, the daily job's
 *     time per step),
 *   - beside the floor: the same SQL files run by bare DuckDB over the same data
 *     as one local Parquet file (no S3, no staging, no publish); the daily part
 *     both over the day already in memory and over the day as a Parquet file.
 *
 *   npx tsx bench/batch.ts --events 10000000            # the target size
 *   npx tsx bench/batch.ts --events 10000000 --reuse    # again, without regenerating
 *   npx tsx bench/batch.ts --events 200000 --shards 4   # a quick check
 *   npx tsx bench/batch.ts --events 10000000 --peer pyspark   # beside PySpark local[2] on the same day (issue 12 §4)
 *
 * Uses its own bucket (BENCH_BUCKET, default bench-batch), emptied first.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { s3Client } from '../common/clients';
import { loadConfig } from '../common/config';
import { logger } from '../common/log';
import { deleteObjects, listObjects } from '../common/lake-io';
import { hoursOfDay, listPublished, newRunId, prepareDaily, publishDaily, runDaily, runDailyShard, runHourly, jobContext, type JobContext } from '../batch-layer/jobs';
import { Duck, sqlString } from '../batch-layer/jobs/duck';
import { compareDaily, runPysparkDaily, sameTables } from './peers/pyspark';
import { backfillCommand } from './batch-backfill';
import { generateDay, loadDay } from './batch-synthetic';

process.env.LOG_LEVEL ??= 'warn';

/** Set when no subcommand was given: the rest of this file is the one-day bench. */
let dayBench = false;
const args = new Command('bench-batch')
  .description('Batch-layer benchmark: N events of one day in the lake → 24 hourly jobs + the daily job, beside bare DuckDB SQL over one local Parquet file.')
  .option('--events <n>', 'events in the day', '10000000')
  .option('--day <YYYY-MM-DD>', 'the simulated day', '2025-02-01')
  .option('--shards <n>', 'user-hash shards of the daily job (default BATCH_SHARDS)')
  .option('--partitions <n>', 'Kafka partitions the raw objects pretend to come from', '6')
  .option('--events-per-user <n>', 'average events per user', '40')
  .option('--via-s3', 'run the daily job as the Temporal activities do (prepare, shards, publish handing files over through S3 _staging/) instead of runDaily in one process')
  .option('--repeat <n>', 'run the daily job and the floor n times, alternating, and report each run plus the minimum and median (single runs on a shared 2-core VM vary by ±15 %)', '1')
  .option('--peer <engine>', 'also run a peer engine on the same raw day and compare times and tables (pyspark)')
  .option('--reuse', 'keep the generated lake and local file (under .scratch/bench-batch/), and on the next run with the same --events/--day skip generating them and the hourly jobs')
  .addHelpText('after', '\nUses its own bucket (BENCH_BUCKET, default bench-batch), emptied first.')
  .action(() => void (dayBench = true))
  .addCommand(backfillCommand())
  .parse()
  .opts<{ events: string; day: string; shards?: string; partitions: string; eventsPerUser: string; reuse?: boolean; viaS3?: boolean; repeat: string; peer?: string }>();

const N = Number(args.events);
const DAY = args.day;
const PARTITIONS = Number(args.partitions);
const USERS = Math.max(1, Math.round(N / Number(args.eventsPerUser)));
const cfg = loadConfig({ ...process.env, S3_BUCKET: process.env.BENCH_BUCKET ?? 'bench-batch' });
const shards = Number(args.shards ?? cfg.batch.shards);
const REPEAT = Number(args.repeat);
for (const [name, v] of [['--events', N], ['--shards', shards], ['--partitions', PARTITIONS], ['--repeat', REPEAT]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`bench-batch: ${name} must be a positive integer\n`);
    process.exit(2);
  }
}
if (args.peer !== undefined && args.peer !== 'pyspark') {
  process.stderr.write(`bench-batch: --peer must be pyspark, not ${args.peer}\n`);
  process.exit(2);
}
const ctx: JobContext = jobContext(cfg, logger('bench-batch'), { timings: {} });
const dayStart = Date.parse(`${DAY}T00:00:00Z`);

/** Wall time and peak RSS (sampled every 50 ms) of one phase. */
async function measure<T>(fn: () => Promise<T>): Promise<{ result: T; seconds: number; peakRssMb: number }> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 50);
  const t0 = performance.now();
  try {
    const result = await fn();
    peak = Math.max(peak, process.memoryUsage.rss());
    return { result, seconds: (performance.now() - t0) / 1000, peakRssMb: Math.round(peak / 2 ** 20) };
  } finally {
    clearInterval(timer);
  }
}

const DAILY_SQL = ['sessions', 'user_daily_activity', 'retention_cohorts_partial', 'binge_users', 'daily_aggregates_partial', 'retention_cohorts', 'daily_aggregates_with_dimensions', 'daily_sessions', 'clicks_to_play', 'top_paths'];

/** The daily SQL files, one after another, over whatever `day_events` is; seconds per file. */
async function dailySql(duck: Duck): Promise<Record<string, number>> {
  await duck.run("CREATE VIEW prev_completes AS SELECT user_id, event_id, ts FROM day_events WHERE false");
  await duck.run('CREATE VIEW history_activity AS SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS DATE) AS day WHERE false');
  const steps: Record<string, number> = {};
  for (const t of DAILY_SQL) {
    const s0 = performance.now();
    await duck.materialize(t);
    steps[t] = +((performance.now() - s0) / 1000).toFixed(2);
  }
  return steps;
}

/**
 * The floor: the batch SQL files over one local Parquet file, no lake around them.
 * The daily part is timed twice: over the day's de-duplicated events already in
 * DuckDB's memory (the stricter floor), and, in a fresh DuckDB, over those events
 * as one local Parquet file, which is the definition of the floor.
 */
async function floor(file: string, dir: string): Promise<{ hourly: number; daily: number; dailyFromFile: number; steps: Record<string, number> }> {
  const eventsFile = path.join(dir, 'day-events.parquet');
  const vars = { hour: DAY, hour_start: dayStart, hour_end: dayStart + 86_400_000, day: { date: DAY }, day_start: dayStart, day_end: dayStart + 86_400_000 };
  let hourly = 0;
  let daily = 0;
  let steps: Record<string, number> = {};
  const duck = await Duck.open({ threads: cfg.batch.duckdbThreads });
  try {
    await duck.run(`CREATE VIEW raw_events AS SELECT * FROM read_parquet(${sqlString(file)})`);
    await duck.setVariables(vars);
    const t0 = performance.now();
    await duck.materialize('events');
    for (const t of ['hourly_events', 'hourly_users', 'hourly_playback']) await duck.materialize(t);
    const t1 = performance.now();
    await duck.run('CREATE VIEW day_events AS SELECT * FROM events');
    steps = await dailySql(duck);
    hourly = (t1 - t0) / 1000;
    daily = (performance.now() - t1) / 1000;
    await duck.writeParquet('events', eventsFile);
  } finally {
    duck.close();
  }
  const fresh = await Duck.open({ threads: cfg.batch.duckdbThreads });
  try {
    await fresh.setVariables(vars);
    const t0 = performance.now();
    await fresh.run(`CREATE VIEW day_events AS SELECT * FROM read_parquet(${sqlString(eventsFile)})`);
    await dailySql(fresh);
    return { hourly, daily, dailyFromFile: (performance.now() - t0) / 1000, steps };
  } finally {
    fresh.close();
    fs.rmSync(eventsFile, { force: true });
  }
}

/** One daily job: runDaily in this process, or (--via-s3) the activities' steps handing over through S3. */
function measureDaily(now: number) {
  return measure(async () => {
    if (!args.viaS3) return runDaily(ctx, DAY, { shards, now });
    const runId = newRunId('daily', DAY);
    await prepareDaily(ctx, DAY, runId, shards, { now });
    for (let shard = 0; shard < shards; shard++) await runDailyShard(ctx, DAY, runId, shard, shards);
    return publishDaily(ctx, DAY, runId, shards);
  });
}

async function main(): Promise<void> {
  const reuseDir = path.resolve('.scratch', 'bench-batch', `${DAY}-${N}-${PARTITIONS}-${USERS}`);
  const dir = args.reuse ? reuseDir : fs.mkdtempSync(path.join(os.tmpdir(), 'bench-batch-'));
  const local = path.join(dir, 'day.parquet');
  const ready = path.join(dir, 'ready.json');
  const now = dayStart + 2 * 86_400_000;
  let keep = false;
  try {
    let setup = { seconds: 0 };
    let objects = 0;
    let rawRows = 0;
    let hourlyTimes: number[] = [];
    let hourly = { seconds: 0, peakRssMb: 0 };
    // The kept files are only reusable while the bucket still holds that run's published hours (another run empties it).
    if (args.reuse && fs.existsSync(ready) && (await listPublished(ctx, 'hourly')).filter((h) => h.startsWith(DAY)).length === 24) {
      ({ objects, rawRows, hourlyTimes, hourly, setup } = JSON.parse(fs.readFileSync(ready, 'utf8')));
      process.stderr.write(`reusing the lake and ${local} of an earlier run (setup and hourly figures are that run's)\n`);
    } else {
      fs.mkdirSync(dir, { recursive: true });
      const gen = await Duck.open({ threads: cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck') });
      setup = await measure(async () => {
        await generateDay(gen, { day: DAY, events: N, users: USERS, partitions: PARTITIONS }, local);
        objects = await loadDay(gen, cfg, dir, { day: DAY, partitions: PARTITIONS, emptyBucket: true });
      });
      rawRows = await gen.scalar('SELECT count(*) FROM gen');
      gen.close();
      hourly = await measure(async () => {
        for (const hour of hoursOfDay(DAY)) {
          const t0 = performance.now();
          await runHourly(ctx, hour, { now });
          hourlyTimes.push((performance.now() - t0) / 1000);
        }
      });
      if (args.reuse) fs.writeFileSync(ready, JSON.stringify({ objects, rawRows, hourlyTimes, hourly: { seconds: hourly.seconds, peakRssMb: hourly.peakRssMb }, setup: { seconds: setup.seconds } }));
    }
    keep = !!args.reuse;
    const runs: { daily: number; bare: number; bareFromFile: number }[] = [];
    let daily!: Awaited<ReturnType<typeof measureDaily>>;
    let bare!: Awaited<ReturnType<typeof measure<Awaited<ReturnType<typeof floor>>>>>;
    let dailySteps: Record<string, number> = {};
    for (let i = 0; i < REPEAT; i++) {
      ctx.timings = {};
      daily = await measureDaily(now);
      dailySteps = Object.fromEntries(Object.entries(ctx.timings).map(([k, v]) => [k, +v.toFixed(2)]));
      bare = await measure(() => floor(local, dir));
      runs.push({ daily: +daily.seconds.toFixed(2), bare: +bare.result.daily.toFixed(2), bareFromFile: +bare.result.dailyFromFile.toFixed(2) });
      process.stderr.write(`run ${i + 1}: daily ${daily.seconds.toFixed(2)} s, bare ${bare.result.daily.toFixed(2)} s (from file ${bare.result.dailyFromFile.toFixed(2)} s)\n`);
    }
    // The peer reads the same raw rows (duplicates included) as one local Parquet file, and must publish the same tables.
    let peer: Record<string, unknown> | undefined;
    if (args.peer === 'pyspark') {
      const outDir = path.join(dir, 'peer-pyspark');
      const run = await measure(() => runPysparkDaily({ input: local, day: DAY, outDir }));
      const diffs = await compareDaily(ctx, DAY, outDir, path.join(dir, 'peer-compare'));
      fs.rmSync(outDir, { recursive: true, force: true });
      fs.rmSync(path.join(dir, 'peer-compare'), { recursive: true, force: true });
      const p = run.result;
      peer = {
        engine: 'pyspark local[2]',
        dedupeSeconds: p.dedupeSeconds,
        dailySeconds: p.dailySeconds,
        wallSeconds: p.wallSeconds,
        sessions: p.rowCounts.sessions,
        sameTables: sameTables(diffs),
        ...(sameTables(diffs) ? {} : { differences: diffs.filter((d) => d.missing.length + d.unexpected.length > 0 || d.projectRows !== d.peerRows) }),
        dailyVsProject: +(p.dailySeconds / daily.seconds).toFixed(2),
        withDedupeVsProjectWithHourly: +((p.dedupeSeconds + p.dailySeconds) / (hourly.seconds + daily.seconds)).toFixed(2),
      };
      process.stderr.write(`pyspark: dedupe ${p.dedupeSeconds} s, daily ${p.dailySeconds} s (project daily ${daily.seconds.toFixed(2)} s), same tables: ${sameTables(diffs)}\n`);
    }
    const stat = (k: 'daily' | 'bare' | 'bareFromFile') => {
      const v = runs.map((r) => r[k]).sort((a, b) => a - b);
      const mid = Math.floor(v.length / 2);
      return { min: v[0], median: +(v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2).toFixed(2) };
    };
    const report = {
      events: N,
      rawRows,
      users: USERS,
      rawObjects: objects,
      shards,
      handoff: args.viaS3 ? 's3' : 'local',
      setupSeconds: +setup.seconds.toFixed(1),
      hourly: {
        totalSeconds: +hourly.seconds.toFixed(2),
        maxHourSeconds: +Math.max(...hourlyTimes).toFixed(2),
        meanHourSeconds: +(hourlyTimes.reduce((a, b) => a + b, 0) / hourlyTimes.length).toFixed(2),
        peakRssMb: hourly.peakRssMb,
      },
      daily: { seconds: +daily.seconds.toFixed(2), peakRssMb: daily.peakRssMb, sessions: daily.result.rowCounts.sessions, steps: dailySteps },
      bareSql: {
        hourlySeconds: +bare.result.hourly.toFixed(2),
        dailySeconds: +bare.result.daily.toFixed(2),
        dailyFromFileSeconds: +bare.result.dailyFromFile.toFixed(2),
        peakRssMb: bare.peakRssMb,
        dailySteps: bare.result.steps,
      },
      dailyVsBare: +(daily.seconds / bare.result.daily).toFixed(2),
      dailyVsBareFromFile: +(daily.seconds / bare.result.dailyFromFile).toFixed(2),
      ...(runs.length > 1
        ? {
            runs,
            minimum: { daily: stat('daily').min, bare: stat('bare').min, bareFromFile: stat('bareFromFile').min, dailyVsBare: +(stat('daily').min / stat('bare').min).toFixed(2), dailyVsBareFromFile: +(stat('daily').min / stat('bareFromFile').min).toFixed(2) },
            median: { daily: stat('daily').median, bare: stat('bare').median, bareFromFile: stat('bareFromFile').median, dailyVsBare: +(stat('daily').median / stat('bare').median).toFixed(2), dailyVsBareFromFile: +(stat('daily').median / stat('bareFromFile').median).toFixed(2) },
          }
        : {}),
      ...(peer ? { peer } : {}),
      note: 'peak RSS is sampled in this process (DuckDB is embedded), so later phases include memory retained from earlier ones',
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    if (!keep) {
      const s3 = s3Client(cfg);
      const left = (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key);
      if (left.length > 0) await deleteObjects(s3, cfg.s3.bucket, left);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

if (dayBench) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
