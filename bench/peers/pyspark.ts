/**
 * The PySpark peer of the daily job (issue 12 §4): runs bench/peers/pyspark/daily.py over a
 * raw day as Parquet, and checks its tables against what the project's daily job published
 * for that day, row for row.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { lakePaths, lakeTables, type RunManifest } from '../../common/lake';
import { getJson, stageObjects } from '../../common/lake-io';
import type { JobContext } from '../../batch-layer/jobs';
import { Duck, sqlString } from '../../batch-layer/jobs/duck';
import { REPO_ROOT } from '../../common/config';
import { ensurePyspark } from './setup';

const SCRIPT = path.join(REPO_ROOT, 'bench', 'peers', 'pyspark', 'daily.py');

export interface PysparkRun {
  /** Raw Parquet -> de-duplicated events Parquet. */
  dedupeSeconds: number;
  /** Events Parquet -> every daily table written. */
  dailySeconds: number;
  /** The whole process, JVM start included. */
  wallSeconds: number;
  rowCounts: Record<string, number>;
}

/** Runs the peer (installing PySpark on first use); one Parquet directory per table under outDir. */
export async function runPysparkDaily(opts: { input: string; day: string; outDir: string; master?: string }): Promise<PysparkRun> {
  const python = await ensurePyspark();
  const args = [SCRIPT, '--input', opts.input, '--day', opts.day, '--out', opts.outDir, '--master', opts.master ?? 'local[2]'];
  const t0 = performance.now();
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`daily.py exited ${code}:\n${err}`))));
  });
  const last = stdout.trim().split('\n').at(-1)!;
  return { ...(JSON.parse(last) as Omit<PysparkRun, 'wallSeconds'>), wallSeconds: +((performance.now() - t0) / 1000).toFixed(2) };
}

export interface TableDiff {
  table: string;
  projectRows: number;
  peerRows: number;
  /** Rows of the project's table the peer lacks (multiset), at most 5. */
  missing: unknown[];
  /** Rows of the peer the project's table lacks, at most 5. */
  unexpected: unknown[];
}

/** The daily tables daily.py computes (the analytics tables of issue 14 are not in the peer yet). */
export const PEER_TABLES = ['sessions', 'user_daily_activity', 'binge_users', 'retention_cohorts', 'daily_aggregates_with_dimensions', 'daily_sessions', 'clicks_to_play', 'top_paths'];

/**
 * Every daily table the project published for `day` (the objects its manifest names) beside the
 * peer's, over the project's columns: equal when both differences are empty and the counts match.
 */
export async function compareDaily(ctx: JobContext, day: string, outDir: string, scratch: string): Promise<TableDiff[]> {
  const manifest = await getJson<RunManifest>(ctx.s3, ctx.bucket, lakePaths.manifest('daily', day));
  if (!manifest) throw new Error(`no daily manifest for ${day}`);
  const duck = await Duck.open({ threads: 2 });
  try {
    const diffs: TableDiff[] = [];
    for (const { table } of lakeTables('daily').filter((t) => PEER_TABLES.includes(t.table))) {
      const [file] = await stageObjects(ctx.s3, ctx.bucket, [manifest.outputs[table]], path.join(scratch, 'project'));
      await duck.run(`CREATE OR REPLACE VIEW project AS SELECT * FROM read_parquet(${sqlString(file)}, hive_partitioning = false)`);
      await duck.run(`CREATE OR REPLACE VIEW peer AS SELECT * FROM read_parquet(${sqlString(path.join(outDir, table, '*.parquet'))}, hive_partitioning = false)`);
      const cols = (await duck.rows('DESCRIBE project')).map((r) => `"${r.column_name as string}"`).join(', ');
      diffs.push({
        table,
        projectRows: await duck.scalar('SELECT count(*) FROM project'),
        peerRows: await duck.scalar('SELECT count(*) FROM peer'),
        missing: await duck.json(`SELECT ${cols} FROM project EXCEPT ALL SELECT ${cols} FROM peer LIMIT 5`),
        unexpected: await duck.json(`SELECT ${cols} FROM peer EXCEPT ALL SELECT ${cols} FROM project LIMIT 5`),
      });
    }
    return diffs;
  } finally {
    duck.close();
  }
}

/** True when every table matched row for row. */
export function sameTables(diffs: readonly TableDiff[]): boolean {
  return diffs.every((d) => d.projectRows === d.peerRows && d.missing.length === 0 && d.unexpected.length === 0);
}
