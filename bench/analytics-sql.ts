/**
 * The per-user daily SQL of the product-analytics tables (issue 14) beside the retention
 * cohorts they sit next to: one shard's user_lifecycle, retention_variants_partial and
 * churn_risk over a synthetic activity history, in bare DuckDB (no lake, no stack).
 *
 *   npx tsx bench/analytics-sql.ts [--users 200000] [--days 56] [--repeat 2] [--compare old.sql]
 *
 * Each user is active on a day with a chance of 0.3 (a hash, so every run has the same rows).
 * `--compare` also times another version of retention_variants_partial (say
 * `git show <commit>:batch-layer/sql/retention_variants_partial.sql > old.sql`), alternating
 * with the current one, and counts the rows in which their results differ.
 */
import fs from 'node:fs';
import { Command } from 'commander';
import { Duck, sqlFile } from '../batch-layer/jobs/duck';

const opts = new Command('bench-analytics-sql')
  .description('Time the per-user SQL of lifecycle, retention variants and churn risk over a synthetic history (bare DuckDB)')
  .option('--users <n>', 'users in the shard', '200000')
  .option('--days <n>', 'days of history up to the as-of day', '56')
  .option('--repeat <n>', 'rounds, each statement once per round', '2')
  .option('--compare <file>', 'another retention_variants_partial.sql to time beside the current one')
  .parse()
  .opts<{ users: string; days: string; repeat: string; compare?: string }>();

const day = '2025-03-31';
const duck = await Duck.open({ threads: 2 });
await duck.setVariables({ day: { date: day } });
await duck.run(`CREATE TABLE all_activity AS
  SELECT 'u' || u AS user_id, DATE '${day}' - CAST(d AS INTEGER) AS day FROM range(${Number(opts.users)}) t(u), range(${Number(opts.days)}) s(d)
  WHERE hash(u, d) % 10 < 3`);
await duck.run(`CREATE TABLE history_activity AS SELECT * FROM all_activity WHERE day < DATE '${day}'`);
await duck.run(`CREATE TABLE user_daily_activity AS SELECT * FROM all_activity WHERE day = DATE '${day}'`);

const statements: Record<string, string> = {
  retention_cohorts_partial: sqlFile('retention_cohorts_partial'),
  ...(opts.compare ? { retention_variants_partial_compared: fs.readFileSync(opts.compare, 'utf8').trim().replace(/;\s*$/, '') } : {}),
  retention_variants_partial: sqlFile('retention_variants_partial'),
  user_lifecycle: sqlFile('user_lifecycle'),
  churn_risk: sqlFile('churn_risk'),
};
const ms: Record<string, number[]> = {};
for (let round = 0; round < Number(opts.repeat); round++) {
  for (const [name, sql] of Object.entries(statements)) {
    const t0 = performance.now();
    await duck.run(`CREATE OR REPLACE TABLE t_${name} AS ${sql}`);
    (ms[name] ??= []).push(Math.round(performance.now() - t0));
  }
}
const report: Record<string, unknown> = { users: Number(opts.users), days: Number(opts.days), activityRows: await duck.scalar('SELECT count(*) FROM all_activity'), ms };
if (opts.compare) {
  report.rowsDiffering = await duck.scalar(`SELECT count(*) FROM (
    (SELECT * FROM t_retention_variants_partial_compared EXCEPT ALL SELECT * FROM t_retention_variants_partial)
    UNION ALL (SELECT * FROM t_retention_variants_partial EXCEPT ALL SELECT * FROM t_retention_variants_partial_compared))`);
}
process.stdout.write(`${JSON.stringify(report)}\n`);
duck.close();
