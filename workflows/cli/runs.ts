/**
 * Recent batch runs and their status, as the Temporal UI shows them.
 *
 *   npm run runs -- list [--kind daily] [--period 2026-11-20] [--status running] [--limit 20]
 *   npm run runs -- show <workflowId>
 *   npm run runs -- cancel <workflowId>
 */
import { Command, InvalidArgumentError } from 'commander';
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { config, type Config } from '../../common/config';
import { connectClient, parseCli, runCliIfMain, workflowLink } from '../client';

const STATUSES = ['running', 'completed', 'failed', 'canceled', 'terminated', 'continued_as_new', 'timed_out'] as const;

function quote(v: string): string {
  return `'${v.replace(/'/g, "\\'")}'`;
}

/** The visibility query of `runs list`: batch runs only (they carry BatchKind), narrowed by the options. */
export function runsQuery(cfg: Config, opts: { kind?: string; period?: string; status?: string }): string {
  const where = ['BatchKind IS NOT NULL'];
  if (opts.kind) where.push(`BatchKind = ${quote(opts.kind)}`);
  if (opts.period) where.push(`BatchPeriod = ${quote(opts.period)}`);
  if (opts.status) {
    const name = opts.status.toLowerCase().split('_').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
    where.push(`ExecutionStatus = ${quote(name)}`);
  }
  const prefix = cfg.orchestration.workflowIdPrefix;
  if (prefix) where.push(`WorkflowId STARTS_WITH ${quote(prefix)}`);
  return where.join(' AND ');
}

export interface RunRow {
  workflowId: string;
  runId: string;
  type: string;
  status: string;
  kind?: string;
  period?: string;
  startTime: Date;
  closeTime?: Date;
  url: string;
}

export async function listRuns(client: Client, cfg: Config, opts: { kind?: string; period?: string; status?: string; limit?: number } = {}): Promise<RunRow[]> {
  const rows: RunRow[] = [];
  const limit = opts.limit ?? 20;
  for await (const w of client.workflow.list({ query: runsQuery(cfg, opts), pageSize: Math.min(limit, 100) })) {
    rows.push(toRow(cfg, w));
    if (rows.length >= limit) break;
  }
  return rows;
}

function toRow(cfg: Config, w: WorkflowExecutionInfo): RunRow {
  const attrs = Object.fromEntries(w.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value]));
  return {
    workflowId: w.workflowId,
    runId: w.runId,
    type: w.type,
    status: w.status.name,
    kind: attrs.BatchKind as string | undefined,
    period: attrs.BatchPeriod as string | undefined,
    startTime: w.startTime,
    closeTime: w.closeTime,
    url: workflowLink(cfg, w.workflowId, w.runId),
  };
}

function duration(r: RunRow): string {
  const ms = (r.closeTime ?? new Date()).getTime() - r.startTime.getTime();
  return ms < 60_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be an integer >= 1');
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const cfg = config();
  const withClient = async (fn: (client: Client) => Promise<void>) => {
    const client = await connectClient(cfg);
    try {
      await fn(client);
    } finally {
      await client.connection.close();
    }
  };
  const program = new Command('runs').description('Batch runs (hourly, daily, backfill, reconcile, …) and their status.').exitOverride();
  program
    .command('list')
    .description('recent runs, newest first')
    .option('--kind <kind>', 'hourly, daily, backfill, reconcile, compact, retention, scheduled-hourly, scheduled-daily')
    .option('--period <period>', 'e.g. 2026-11-20 or 2026-11-20T13')
    .option('--status <status>', STATUSES.join(', '), (v: string) => {
      if (!(STATUSES as readonly string[]).includes(v.toLowerCase())) throw new InvalidArgumentError(`must be one of ${STATUSES.join(', ')}`);
      return v;
    })
    .option('--limit <n>', 'at most this many', positiveInt, 20)
    .action((o: { kind?: string; period?: string; status?: string; limit: number }) =>
      withClient(async (c) => {
        const rows = await listRuns(c, cfg, o);
        if (rows.length === 0) console.log('no batch runs found');
        for (const r of rows) {
          console.log(`${r.status.padEnd(16)} ${(r.kind ?? '-').padEnd(16)} ${(r.period ?? '-').padEnd(24)} ${r.startTime.toISOString()}  ${duration(r).padStart(8)}  ${r.workflowId}`);
          console.log(`${' '.repeat(17)}${r.url}`);
        }
      }),
    );
  program
    .command('show <workflowId>')
    .description('status, search attributes, memo and outcome of a run')
    .action((id: string) =>
      withClient(async (c) => {
        const h = c.workflow.getHandle(id);
        const d = await h.describe();
        console.log(`${d.workflowId}  ${d.type}  ${d.status.name}`);
        console.log(`  started ${d.startTime.toISOString()}${d.closeTime ? `, closed ${d.closeTime.toISOString()}` : ''}`);
        console.log(`  attributes ${JSON.stringify(Object.fromEntries(d.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])))}`);
        console.log(`  memo ${JSON.stringify((await d.memo) ?? {})}`);
        if (d.status.name === 'COMPLETED') console.log(`  result ${JSON.stringify(await h.result())}`);
        if (d.status.name === 'FAILED') console.log(`  failure ${await h.result().then(() => '', (e: Error) => ((e.cause as Error | undefined) ?? e).message)}`);
        console.log(`  ${workflowLink(cfg, d.workflowId, d.runId)}`);
      }),
    );
  program
    .command('cancel <workflowId>')
    .description('ask a run (e.g. a backfill) to stop; its running periods are cancelled and their staging removed')
    .action((id: string) =>
      withClient(async (c) => {
        await c.workflow.getHandle(id).cancel();
        console.log(`cancellation requested: ${workflowLink(cfg, id)}`);
      }),
    );
  return (await parseCli(program, argv)) ?? 0;
}

runCliIfMain(import.meta.url, main);
