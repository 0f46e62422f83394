/**
 * Starts a backfill and shows its progress until it is done.
 *
 *   npm run backfill -- --from 2026-11-01 --to 2026-11-20 [--kind daily|hourly] [--concurrency 4] [--mode steps|children] [--detach]
 */
import { Command, InvalidArgumentError } from 'commander';
import { SingleBar } from 'cli-progress';
import { WorkflowFailedError, WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { config, type Config } from '../../common/config';
import type { PeriodKind } from '../../common/lake';
import { connectClient, runCliIfMain, workflowLink } from '../client';
import { InvalidPeriodError, backfillWorkflowId, planRange, type PeriodRange } from '../ids';
import { batchAttributes } from '../search-attributes';
import type { BackfillMode, BackfillProgress, PeriodFailure } from '../types';
import { backfill, progressQuery } from '../workflows';

export interface BackfillRequest {
  from: string;
  to: string;
  kind: PeriodKind;
  concurrency?: number;
  periodsPerRun?: number;
  mode?: BackfillMode;
}

export interface StartedBackfill {
  handle: WorkflowHandleWithFirstExecutionRunId<typeof backfill>;
  range: PeriodRange;
  url: string;
}

/** Validates the range (throws InvalidPeriodError before anything is started), then starts the backfill workflow. */
export async function startBackfill(client: Client, cfg: Config, req: BackfillRequest, nowMs = Date.now()): Promise<StartedBackfill> {
  const range = planRange(req.kind, req.from, req.to, nowMs);
  const workflowId = backfillWorkflowId(cfg.orchestration.workflowIdPrefix, range.kind, range.first, range.last);
  const handle = await client.workflow.start(backfill, {
    taskQueue: cfg.temporal.taskQueue,
    workflowId,
    args: [{ kind: range.kind, from: range.first, to: range.last, concurrency: req.concurrency, periodsPerRun: req.periodsPerRun, ...(req.mode ? { mode: req.mode } : {}) }],
    // One backfill of a range at a time; once it has finished, running it again is an explicit re-run.
    workflowIdConflictPolicy: 'FAIL',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    typedSearchAttributes: batchAttributes('backfill', `${range.first}..${range.last}`),
    memo: { kind: range.kind, from: range.first, to: range.last, periods: range.count, concurrency: req.concurrency ?? cfg.orchestration.backfillConcurrency },
  });
  return { handle, range, url: workflowLink(cfg, workflowId) };
}

/** The failures a finished backfill reports (from its failure details), or [] when it succeeded. */
export function failuresOf(err: unknown): PeriodFailure[] {
  const cause = err instanceof WorkflowFailedError ? err.cause : undefined;
  if (cause instanceof ApplicationFailure && cause.type === 'BackfillFailed') {
    return ((cause.details?.[0] as { failures?: PeriodFailure[] } | undefined)?.failures ?? []);
  }
  return [];
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be an integer >= 1');
  return n;
}

function modeArg(value: string): BackfillMode {
  if (value !== 'steps' && value !== 'children') throw new InvalidArgumentError('must be "steps" or "children"');
  return value;
}

function kindArg(value: string): PeriodKind {
  if (value !== 'hourly' && value !== 'daily') throw new InvalidArgumentError('must be "hourly" or "daily"');
  return value;
}

async function watch(handle: WorkflowHandle<typeof backfill>, range: PeriodRange): Promise<number> {
  const bar = new SingleBar(
    {
      format: '{bar} {percentage}% | {value}/{total} periods | done {done} failed {failed} running {running} | {status}',
      hideCursor: true,
      clearOnComplete: false,
    },
    undefined,
  );
  bar.start(range.count, 0, { done: 0, failed: 0, running: 0, status: 'starting' });
  let last: BackfillProgress | undefined;
  const poll = async () => {
    try {
      last = await handle.query(progressQuery);
      bar.update(last.done + last.failed, { done: last.done, failed: last.failed, running: last.running, status: last.runningPeriods.slice(0, 3).join(' ') || last.state });
    } catch {
      bar.update({ status: 'waiting for a worker…' });
    }
  };
  const timer = setInterval(() => void poll(), 1000);
  let outcome: { ok: true } | { ok: false; err: unknown };
  try {
    await handle.result();
    outcome = { ok: true };
  } catch (err) {
    outcome = { ok: false, err };
  } finally {
    clearInterval(timer);
  }
  await poll();
  bar.stop();
  if (outcome.ok) {
    console.log(`backfill finished: ${last?.done ?? range.count} of ${range.count} periods published`);
    return 0;
  }
  const failures = failuresOf(outcome.err);
  if (failures.length > 0) {
    console.log(`backfill finished with ${failures.length} failed period(s) of ${range.count}:`);
    for (const f of failures) console.log(`  ${f.period}  ${f.type ?? 'error'}${f.objectKey ? ` (object ${f.objectKey})` : ''}: ${f.error}`);
    return 1;
  }
  const cause = outcome.err instanceof WorkflowFailedError ? outcome.err.cause : undefined;
  if (cause instanceof CancelledFailure) console.log('backfill cancelled');
  else console.log(`backfill failed: ${(cause ?? (outcome.err as Error)).message}`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('backfill')
    .description('Recompute a range of periods (inclusive, UTC) as child workflows, with bounded parallelism, and show live progress.')
    .requiredOption('--from <period>', 'first period: YYYY-MM-DD (or YYYY-MM-DDTHH for --kind hourly)')
    .requiredOption('--to <period>', 'last period, inclusive: YYYY-MM-DD (or YYYY-MM-DDTHH for --kind hourly)')
    .option('--kind <kind>', 'hourly or daily', kindArg, 'daily' as PeriodKind)
    .option('--concurrency <n>', 'periods running at once (default from BACKFILL_CONCURRENCY)', positiveInt)
    .option('--mode <mode>', 'daily only: "steps" runs each day\'s hours in one step, ahead of the days, and each day in one step; "children" as the schedules do, a child workflow per hour', modeArg, 'steps' as BackfillMode)
    .option('--periods-per-run <n>', 'continue-as-new after this many periods (default from BACKFILL_PERIODS_PER_RUN)', positiveInt)
    .option('--detach', 'start it, print its link and return without waiting')
    .addHelpText('after', '\nExamples:\n  npm run backfill -- --from 2026-11-01 --to 2026-11-20\n  npm run backfill -- --kind hourly --from 2026-11-20T00 --to 2026-11-20T12 --concurrency 2 --detach')
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    return (err as { exitCode?: number }).exitCode ?? 2;
  }
  const opts = program.opts<{ from: string; to: string; kind: PeriodKind; concurrency?: number; periodsPerRun?: number; mode: BackfillMode; detach?: boolean }>();
  const cfg = config();
  try {
    // Validate before connecting: a bad range starts nothing.
    planRange(opts.kind, opts.from, opts.to, Date.now());
  } catch (err) {
    if (err instanceof InvalidPeriodError) {
      console.error(`error: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const client = await connectClient(cfg);
  try {
    let started: StartedBackfill;
    try {
      started = await startBackfill(client, cfg, opts);
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        console.error(`error: a backfill of this range is already running: ${workflowLink(cfg, err.workflowId)}`);
        return 1;
      }
      throw err;
    }
    console.log(`started ${started.range.kind} backfill of ${started.range.count} period(s) ${started.range.first}..${started.range.last}`);
    console.log(`  workflow ${started.handle.workflowId}`);
    console.log(`  ${started.url}`);
    if (opts.detach) return 0;
    process.once('SIGINT', () => {
      console.log(`\ndetached; the backfill goes on: ${started.url}\ncancel it with: npm run runs -- cancel ${started.handle.workflowId}`);
      process.exit(130);
    });
    return await watch(started.handle, started.range);
  } finally {
    await client.connection.close();
  }
}

runCliIfMain(import.meta.url, main);
