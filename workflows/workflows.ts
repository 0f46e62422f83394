/**
 * Batch orchestration. Deterministic and free of I/O: every read or write of
 * the lake, Redis or the config goes through an activity. `Date.now()` here is
 * the workflow clock (the time of the current workflow task), which replays
 * identically.
 *
 * Every period runs as its own workflow whose id is derived from it
 * (`hourly-2026-11-20T13`, `daily-2026-11-20`), whoever starts it: a schedule,
 * a backfill, a daily run filling in its hours, or late-data reconciliation.
 * The server refuses a second running workflow with the same id, which is what
 * guarantees a period is never computed twice at once.
 */
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  continueAsNew,
  defineQuery,
  isCancellation,
  log,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { PeriodKind } from '../common/lake';
import type { BatchActivities } from './activities';
import { checkPeriod, periodAt, periodWorkflowId, planRange, previousDay, previousHour, type PeriodRange } from './ids';
import { BATCH_PERIOD, SCHEDULED_START_TIME, batchAttributes } from './search-attributes';
import {
  NON_RETRYABLE_TYPES,
  type BackfillCarry,
  type BackfillInput,
  type BackfillMode,
  type BackfillProgress,
  type ErasureInput,
  type ErasureProgress,
  type FanOutResult,
  type OrchestrationSettings,
  type PeriodFailure,
  type RunSummary,
} from './types';

const MAX_BACKFILL_CONCURRENCY = 200;

export const progressQuery = defineQuery<BackfillProgress>('progress');

const { orchestrationSettings } = proxyLocalActivities<BatchActivities>({ startToCloseTimeout: '30 seconds' });

function activitiesFor(s: OrchestrationSettings) {
  const retry = {
    initialInterval: s.retryInitialMs,
    backoffCoefficient: 2,
    maximumInterval: s.retryMaxMs,
    maximumAttempts: s.maxAttempts,
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  };
  const common = {
    heartbeatTimeout: s.heartbeatTimeoutMs,
    retry,
    // Wait for the job to stop before the workflow moves on, so its staging can be discarded after it.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
  return {
    heavy: proxyActivities<BatchActivities>({ ...common, startToCloseTimeout: s.activityTimeoutMs }),
    light: proxyActivities<BatchActivities>({ ...common, startToCloseTimeout: Math.min(s.activityTimeoutMs, 10 * 60_000) }),
  };
}

function requirePeriod(kind: PeriodKind, period: string): void {
  try {
    checkPeriod(kind, period, Date.now());
  } catch (err) {
    throw ApplicationFailure.create({ type: 'InvalidPeriodError', message: (err as Error).message, nonRetryable: true });
  }
}

/** Removes a failed or cancelled run's staged outputs; runs even when the workflow is being cancelled. */
async function discardQuietly(s: OrchestrationSettings, runId: string): Promise<void> {
  await CancellationScope.nonCancellable(async () => {
    try {
      await activitiesFor(s).light.discardRun(runId);
    } catch (err) {
      log.warn('could not discard staging', { runId, error: (err as Error).message });
    }
  });
}

/** The deepest failure in a chain: the batch-layer error (type, message, object key) behind a child or activity failure. */
function describeFailure(err: unknown): Pick<PeriodFailure, 'error' | 'type' | 'objectKey'> {
  let e: unknown = err;
  let type: string | undefined;
  let objectKey: string | undefined;
  let message = err instanceof Error ? err.message : String(err);
  while (e instanceof Error) {
    if (e instanceof ApplicationFailure) {
      type = e.type ?? type;
      const d = e.details?.[0] as { key?: unknown } | undefined;
      if (d && typeof d.key === 'string') objectKey = d.key;
    }
    if (e.message) message = e.message;
    e = (e as { cause?: unknown }).cause;
  }
  return { error: message, ...(type ? { type } : {}), ...(objectKey ? { objectKey } : {}) };
}

type PeriodOutcome = { status: 'done'; result: RunSummary } | { status: 'failed'; failure: PeriodFailure } | { status: 'conflict' };

/**
 * Runs one period as a child workflow under its period id. When another run
 * of that period is in progress, waits and tries again (`retryConflicts`), or
 * reports the conflict to the caller.
 */
async function runPeriod(s: OrchestrationSettings, kind: PeriodKind, period: string, retryConflicts: boolean, mode?: BackfillMode): Promise<PeriodOutcome> {
  const workflowId = periodWorkflowId(s.idPrefix, kind, period);
  for (let attempt = 0; ; attempt++) {
    try {
      const child = await startChild(kind === 'hourly' ? hourlyBatch : dailyBatch, {
        workflowId,
        args: kind === 'daily' && mode === 'steps' ? [period, mode] : [period],
        // A finished period may be run again (a re-run is explicit); a running one may not.
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
        // A cancelled or terminated parent asks its children to stop, so they discard their staging.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        typedSearchAttributes: batchAttributes(kind, period),
        memo: { kind, period, requestedBy: workflowInfo().workflowId },
      });
      return { status: 'done', result: await child.result() };
    } catch (err) {
      if (isCancellation(err)) throw err;
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        if (!retryConflicts || attempt >= s.conflictMaxRetries) {
          if (!retryConflicts) return { status: 'conflict' };
          return { status: 'failed', failure: { period, workflowId, error: `${workflowId} kept running elsewhere; gave up after ${attempt + 1} tries`, type: 'Conflict' } };
        }
        log.info('period is running elsewhere; waiting', { workflowId, attempt });
        await sleep(s.conflictRetryMs);
        continue;
      }
      return { status: 'failed', failure: { period, workflowId, ...describeFailure(err) } };
    }
  }
}

/** Runs periods as child workflows, at most `concurrency` at a time; a failure does not stop the others. */
async function fanOut(s: OrchestrationSettings, kind: PeriodKind, periods: readonly string[], concurrency: number): Promise<FanOutResult> {
  const result: FanOutResult = { done: [], failures: [] };
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < periods.length) {
      const period = periods[next++];
      const outcome = await runPeriod(s, kind, period, true);
      if (outcome.status === 'done') result.done.push(period);
      else if (outcome.status === 'failed') result.failures.push(outcome.failure);
    }
  };
  await settleAll(Array.from({ length: Math.min(Math.max(1, concurrency), periods.length) }, lane));
  return result;
}

/** Waits for every lane (so cancellation of one never orphans another), then rethrows the first error. */
async function settleAll(lanes: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled(lanes);
  const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
}

function failuresMessage(what: string, failures: readonly PeriodFailure[], total: number): string {
  const shown = failures.slice(0, 5).map((f) => `${f.period}: ${f.error}`);
  return `${what}: ${failures.length} of ${total} period(s) failed (${shown.join('; ')}${failures.length > shown.length ? '; …' : ''})`;
}

/**
 * Started by a schedule (no period given): the period is the one that had
 * ended at the scheduled time — not the actual start time, so a run caught up
 * after downtime still processes the period it was due for. It then runs
 * under the period's own id.
 */
async function runScheduled(s: OrchestrationSettings, kind: PeriodKind): Promise<RunSummary> {
  const info = workflowInfo();
  const due = info.typedSearchAttributes.get(SCHEDULED_START_TIME) ?? info.startTime;
  const period = kind === 'hourly' ? previousHour(due.getTime()) : previousDay(due.getTime());
  upsertSearchAttributes([{ key: BATCH_PERIOD, value: period }]);
  const outcome = await runPeriod(s, kind, period, true);
  if (outcome.status === 'done') return outcome.result;
  const failure = outcome.status === 'failed' ? outcome.failure : { period, workflowId: periodWorkflowId(s.idPrefix, kind, period), error: 'running elsewhere' };
  throw ApplicationFailure.create({ type: failure.type ?? 'PeriodFailed', message: `${kind} ${period}: ${failure.error}`, nonRetryable: true, details: [failure] });
}

/**
 * One hour: stage its raw objects, compute the hourly tables, publish, move
 * the watermark. Without an argument (a schedule), the hour before the
 * scheduled time.
 */
export async function hourlyBatch(hour?: string): Promise<RunSummary> {
  const s = await orchestrationSettings();
  if (hour === undefined) return runScheduled(s, 'hourly');
  requirePeriod('hourly', hour);
  const { heavy, light } = activitiesFor(s);
  // Stable across worker restarts and retries: a retried step rewrites the same staged keys.
  const runId = `hourly-${hour}-${workflowInfo().runId}`;
  let summary: RunSummary;
  try {
    summary = await heavy.runHour(hour, runId);
  } catch (err) {
    await discardQuietly(s, runId);
    throw err;
  }
  await light.announceWatermark();
  return summary;
}

/**
 * One day: make sure its hours are published (running the missing or dirty
 * ones as child workflows), split it into user-hash shards, run the shards in
 * parallel, combine and publish, move the watermark.
 *
 * Started by a backfill in `steps` mode: the missing hours in one step, and the
 * day in one step (dailyInSteps); a backfill's fixed cost per day is what it saves.
 */
export async function dailyBatch(day?: string, mode?: BackfillMode): Promise<RunSummary> {
  const s = await orchestrationSettings();
  if (day === undefined) return runScheduled(s, 'daily');
  requirePeriod('daily', day);
  const { heavy, light } = activitiesFor(s);
  const runId = `daily-${day}-${workflowInfo().runId}`;
  let summary: RunSummary;
  if (mode === 'steps') {
    try {
      summary = await dailyInSteps(s, day, runId);
    } catch (err) {
      await discardQuietly(s, runId);
      throw err;
    }
    await light.announceWatermark();
    return summary;
  }
  try {
    let shards = 0;
    for (let round = 0; ; round++) {
      const prepared = await heavy.prepareDay(day, runId);
      if (prepared.ready) {
        shards = prepared.shards;
        break;
      }
      if (round > s.conflictMaxRetries) {
        throw ApplicationFailure.create({
          type: 'MissingHoursError',
          message: `day ${day}: hours still not published after ${round} rounds: ${prepared.missingHours.join(', ')}`,
          nonRetryable: true,
          details: [{ day, hours: prepared.missingHours }],
        });
      }
      log.info('running missing hours first', { day, hours: prepared.missingHours.length });
      const hours = await fanOutHours(s, prepared.missingHours);
      if (hours.failures.length > 0) {
        throw ApplicationFailure.create({
          type: 'MissingHoursError',
          message: failuresMessage(`day ${day} cannot run`, hours.failures, prepared.missingHours.length),
          nonRetryable: true,
          details: hours.failures,
        });
      }
      // Hours another run is computing right now: give it time, then look again.
      if (hours.conflicts > 0) await sleep(s.conflictRetryMs);
    }
    // allSettled: a failed shard must not let the staging be discarded under shards still writing to it.
    await settleAll(Array.from({ length: shards }, async (_, shard) => void (await heavy.runDayShard(day, runId, shard, shards))));
    summary = await heavy.publishDay(day, runId, shards);
  } catch (err) {
    await discardQuietly(s, runId);
    throw err;
  }
  await light.announceWatermark();
  return summary;
}

/**
 * The day in one activity (runDaily in one process); the hours it still needs (dirty, or
 * left by a failed step ahead) in one activity each round, under this run's id.
 */
async function dailyInSteps(s: OrchestrationSettings, day: string, runId: string): Promise<RunSummary> {
  const { heavy } = activitiesFor(s);
  for (let round = 0; ; round++) {
    const result = await heavy.runDayInOneStep(day, runId);
    if (result.ready) return result.summary;
    if (round > s.conflictMaxRetries) {
      throw ApplicationFailure.create({
        type: 'MissingHoursError',
        message: `day ${day}: hours still not published after ${round} rounds: ${result.missingHours.join(', ')}`,
        nonRetryable: true,
        details: [{ day, hours: result.missingHours }],
      });
    }
    log.info('running missing hours first', { day, hours: result.missingHours.length });
    await heavy.runHours(result.missingHours, workflowInfo().runId);
  }
}

/** A day's missing hours: conflicts are not retried here, the next prepare round sees whether they got published. */
async function fanOutHours(s: OrchestrationSettings, hours: readonly string[]): Promise<{ failures: PeriodFailure[]; conflicts: number }> {
  const failures: PeriodFailure[] = [];
  let conflicts = 0;
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < hours.length) {
      const outcome = await runPeriod(s, 'hourly', hours[next++], false);
      if (outcome.status === 'failed') failures.push(outcome.failure);
      else if (outcome.status === 'conflict') conflicts++;
    }
  };
  await settleAll(Array.from({ length: Math.min(s.childConcurrency, hours.length) }, lane));
  return { failures, conflicts };
}

export interface BackfillResult {
  kind: PeriodKind;
  first: string;
  last: string;
  total: number;
  done: number;
  runs: number;
}

/**
 * Runs every period of an inclusive range as child workflows, `concurrency` at
 * a time. A failed period is recorded and the others go on; the backfill fails
 * at the end listing them. Long ranges continue as new every `periodsPerRun`
 * periods (or when the server suggests it), carrying the progress along.
 */
export async function backfill(input: BackfillInput): Promise<BackfillResult> {
  let range: PeriodRange;
  try {
    range = planRange(input.kind, input.from, input.to, Date.now());
  } catch (err) {
    throw ApplicationFailure.create({ type: 'InvalidPeriodError', message: (err as Error).message, nonRetryable: true });
  }
  const carry: BackfillCarry = input.state ?? { next: 0, done: 0, failures: [], runs: 1 };
  const failures = [...carry.failures];
  const running = new Set<string>();
  let next = carry.next;
  let done = carry.done;
  let startedThisRun = 0;
  let state: BackfillProgress['state'] = 'running';

  setHandler(progressQuery, () => ({
    kind: range.kind,
    first: range.first,
    last: range.last,
    total: range.count,
    done,
    failed: failures.length,
    running: running.size,
    remaining: range.count - next,
    runningPeriods: [...running].sort(),
    failures,
    run: carry.runs,
    state,
  }));
  // After the handler: a client watching from the start must not find the query missing.
  const s = await orchestrationSettings();
  // The server allows 2,000 pending children per workflow; far fewer keeps each run's history small.
  // Day D's cohorts read every earlier day's user activity, so days publish in order, one at a time;
  // hours have no such dependency: in `steps` mode, `concurrency` lanes compute the days' hours ahead.
  const requested = Math.min(MAX_BACKFILL_CONCURRENCY, Math.max(1, Math.floor(input.concurrency ?? s.backfillConcurrency)));
  const steps = range.kind === 'daily' && (input.mode ?? 'steps') === 'steps';
  const concurrency = range.kind === 'daily' ? 1 : requested;
  const perRun = Math.max(1, Math.floor(input.periodsPerRun ?? s.backfillPeriodsPerRun));
  const { heavy } = activitiesFor(s);
  // Steps mode: the days whose hours a lane ahead has started, by index in the range.
  const hoursAhead = new Map<number, Promise<void>>();
  const lastOfRun = Math.min(range.count, next + perRun);
  let nextAhead = next;
  let daysDone = false;
  const hoursLane = async (): Promise<void> => {
    while (nextAhead < lastOfRun && !daysDone) {
      const i = nextAhead++;
      const day = periodAt(range, i);
      // A failed step leaves the day's hours missing: its dailyBatch runs them again and reports the failure.
      const ahead = heavy.runMissingHours(day, workflowInfo().runId).then(
        () => undefined,
        (err: unknown) => {
          if (isCancellation(err)) throw err;
          log.warn('hours ahead failed; the day runs them itself', { day, error: (err as Error).message });
        },
      );
      hoursAhead.set(i, ahead);
      await ahead;
    }
  };

  const lane = async (): Promise<void> => {
    while (next < range.count && startedThisRun < perRun && !workflowInfo().continueAsNewSuggested) {
      const i = next++;
      const period = periodAt(range, i);
      startedThisRun++;
      running.add(period);
      try {
        if (steps) {
          // Not reached by the lanes ahead: the day runs its hours itself.
          if (nextAhead <= i) nextAhead = i + 1;
          await hoursAhead.get(i);
        }
        const outcome = await runPeriod(s, range.kind, period, true, steps ? 'steps' : undefined);
        if (outcome.status === 'done') done++;
        else if (outcome.status === 'failed') failures.push(outcome.failure);
      } finally {
        running.delete(period);
      }
    }
  };
  const days = async (): Promise<void> => {
    try {
      await settleAll(Array.from({ length: concurrency }, lane));
    } finally {
      daysDone = true;
    }
  };
  try {
    // The lanes ahead first: they take the first day before the days lane looks for its hours.
    const ahead = steps ? Array.from({ length: requested }, hoursLane) : [];
    await settleAll([...ahead, days()]);
  } catch (err) {
    if (isCancellation(err)) state = 'cancelling';
    throw err;
  }

  if (next < range.count) {
    log.info('backfill continues as new', { next, total: range.count, done, failed: failures.length });
    await continueAsNew<typeof backfill>({ ...input, state: { next, done, failures, runs: carry.runs + 1 } });
  }
  state = 'finished';
  if (failures.length > 0) {
    throw ApplicationFailure.create({
      type: 'BackfillFailed',
      message: failuresMessage(`backfill ${range.kind} ${range.first}..${range.last}`, failures, range.count),
      nonRetryable: true,
      details: [{ total: range.count, done, failures }],
    });
  }
  return { kind: range.kind, first: range.first, last: range.last, total: range.count, done, runs: carry.runs };
}

export interface ReconcileResult {
  hourly: FanOutResult;
  daily: FanOutResult;
  /** Dirty periods not over yet: left for the next round. */
  notYetOver: string[];
}

/**
 * Re-runs the periods that late data made dirty: hours first, then days (a day
 * reads its hours' processed events), the days in order. Marks on periods still
 * in progress wait for the next round; days that a re-run marks dirty again are
 * picked up by the next round.
 */
export async function reconcileLateData(): Promise<ReconcileResult> {
  const s = await orchestrationSettings();
  const { light } = activitiesFor(s);
  const late = await light.findLateData();
  const now = Date.now();
  const over = (kind: PeriodKind) => (p: string) => {
    try {
      checkPeriod(kind, p, now);
      return true;
    } catch {
      return false;
    }
  };
  const hours = late.hourly.filter(over('hourly'));
  const days = late.daily.filter(over('daily'));
  const notYetOver = [...late.hourly.filter((p) => !hours.includes(p)), ...late.daily.filter((p) => !days.includes(p))];
  const hourly = await fanOut(s, 'hourly', hours, s.childConcurrency);
  // Days one at a time, oldest first: a day reads every earlier day's activity, and re-running a day
  // whose active users changed marks the later days dirty again (cascadeToLaterDays).
  const daily = await fanOut(s, 'daily', [...days].sort(), 1);
  const failures = [...hourly.failures, ...daily.failures];
  if (failures.length > 0) {
    throw ApplicationFailure.create({
      type: 'ReconcileFailed',
      message: failuresMessage('late-data reconciliation', failures, hours.length + days.length),
      nonRetryable: true,
      details: [{ hourly, daily, notYetOver }],
    });
  }
  return { hourly, daily, notYetOver };
}

export interface CompactResult {
  day: string;
  hoursCompacted: number;
  inputs: number;
  outputs: number;
}

/**
 * Merges each hour's small raw objects of a day into few large ones. Without a day
 * (the `compact` schedule), the day before the scheduled time: its hours are
 * published by then, and later late data only adds objects beside the merged ones.
 */
export async function compactLake(day?: string): Promise<CompactResult> {
  const s = await orchestrationSettings();
  if (day === undefined) {
    const info = workflowInfo();
    day = previousDay((info.typedSearchAttributes.get(SCHEDULED_START_TIME) ?? info.startTime).getTime());
    upsertSearchAttributes([{ key: BATCH_PERIOD, value: day }]);
  }
  requirePeriod('daily', day);
  const { heavy } = activitiesFor(s);
  const hours = Array.from({ length: 24 }, (_, h) => `${day}T${String(h).padStart(2, '0')}`);
  const result: CompactResult = { day, hoursCompacted: 0, inputs: 0, outputs: 0 };
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < hours.length) {
      const r = await heavy.compactRawHour(hours[next++]);
      if (r.compacted) result.hoursCompacted++;
      result.inputs += r.inputs;
      result.outputs += r.outputs.length;
    }
  };
  await settleAll(Array.from({ length: s.childConcurrency }, lane));
  return result;
}

/**
 * Removes raw days older than the configured age (only days whose daily run is
 * published and clean), then the objects of batch runs superseded longer ago than
 * the grace period. Speed-layer keys need no job: they expire by TTL.
 */
export async function applyRetention(): Promise<{
  cutoffDay: string;
  deletedDays: string[];
  deletedObjects: number;
  skipped: { day: string; reason: string }[];
  supersededRuns?: { folders: number; deleted: number; waiting: number };
}> {
  const s = await orchestrationSettings();
  const { heavy } = activitiesFor(s);
  const now = Date.now();
  const retention = await heavy.removeExpiredRaw(now);
  const gc = await heavy.collectOldRuns(now);
  return { ...retention, supersededRuns: gc };
}

export const erasureProgressQuery = defineQuery<ErasureProgress>('erasureProgress');

export interface ErasureResult {
  requestId: string;
  auditKey: string;
  rounds: number;
  progress: ErasureProgress;
}

/**
 * Erases users from every zone of the lake and from Redis, then recomputes what they were
 * counted in. Each round: scan the lake; rewrite the raw objects and dead letters holding them
 * in place, and the published outputs through a manifest swap; clear Redis (first round);
 * recompute the touched hours, then every published day from the first touched one, in order,
 * as the period workflows (so never at once with another run of a period); wait out the
 * grace a reader of a previous manifest has; delete the superseded objects. The next round's
 * scan must find nothing (a run racing the erasure can publish the users again: then it goes
 * round again, at most ERASURE_MAX_ROUNDS times). The audit record comes last.
 */
export async function eraseUsers(input: ErasureInput): Promise<ErasureResult> {
  const progress: ErasureProgress = {
    requestId: input.requestId,
    users: input.users.length,
    step: 'starting',
    round: 0,
    objectsScanned: 0,
    rewritten: { raw: 0, dlq: 0, published: 0 },
    rowsRemoved: 0,
    objectsRemoved: 0,
    redisRemoved: 0,
    periods: { hourly: { done: 0, total: 0 }, daily: { done: 0, total: 0 } },
    failures: [],
    userTables: [],
  };
  setHandler(erasureProgressQuery, () => progress);
  const s = await orchestrationSettings();
  const { erasureSettings } = proxyLocalActivities<BatchActivities>({ startToCloseTimeout: '30 seconds' });
  const e = await erasureSettings();
  const { heavy, light } = activitiesFor(s);
  const hourly = new Set<string>();
  const daily = new Set<string>();
  let objectsScanned = 0;
  for (let round = 0; ; round++) {
    progress.round = round;
    progress.step = 'scanning';
    const plan = await heavy.findErasedUsers(input.requestId, input.users, round);
    objectsScanned += plan.objectsScanned;
    progress.objectsScanned = objectsScanned;
    if (round === 0) progress.userTables = plan.userTables;
    if (plan.raw + plan.dlq + plan.published + plan.unnamed === 0) break;
    if (round >= e.maxRounds) {
      throw ApplicationFailure.create({
        type: 'ErasureIncomplete',
        message: `erasure ${input.requestId}: objects still hold the users after ${round} round(s) (raw ${plan.raw}, dead letters ${plan.dlq}, published ${plan.published}, unnamed ${plan.unnamed}); a batch run keeps publishing them?`,
        nonRetryable: true,
        details: [progress],
      });
    }
    progress.step = 'rewriting raw';
    const raw = await heavy.rewriteRawWithoutUsers(input.requestId, input.users);
    progress.rewritten.raw += plan.raw;
    progress.rewritten.dlq += plan.dlq;
    progress.rowsRemoved += raw.rows;
    progress.step = 'rewriting published';
    const published = await heavy.rewritePublishedWithoutUsers(input.requestId, input.users);
    progress.rewritten.published += published.objects;
    progress.rowsRemoved += published.rows;
    if (round === 0) {
      progress.step = 'redis';
      progress.redisRemoved = await light.eraseUsersFromRedis(input.users);
    }
    // Hours first (a day reads its hours' processed events), then the days oldest first.
    progress.step = 'recomputing hours';
    progress.periods.hourly.total += plan.hours.length;
    const hours = await fanOut(s, 'hourly', plan.hours, s.childConcurrency);
    progress.periods.hourly.done += hours.done.length;
    progress.step = 'recomputing days';
    progress.periods.daily.total += plan.days.length;
    const days = await fanOut(s, 'daily', [...plan.days].sort(), 1);
    progress.periods.daily.done += days.done.length;
    progress.failures.push(...hours.failures, ...days.failures);
    for (const h of hours.done) hourly.add(h);
    for (const d of days.done) daily.add(d);
    progress.step = 'waiting out the grace';
    await sleep(e.graceMs);
    progress.step = 'removing superseded';
    const removed = await light.removeSupersededObjects(input.requestId, published.superseded, Date.now());
    progress.objectsRemoved += removed.deleted;
  }
  progress.step = 'auditing';
  const info = workflowInfo();
  const auditKey = await light.writeErasureAudit(
    {
      requestId: input.requestId,
      workflowId: info.workflowId,
      requestedAt: input.requestedAt,
      users: input.users.length,
      rounds: progress.round,
      objectsScanned,
      objectsRewritten: progress.rewritten,
      objectsRemoved: progress.objectsRemoved,
      rowsRemoved: progress.rowsRemoved,
      periodsRecomputed: { hourly: [...hourly].sort(), daily: [...daily].sort() },
      redisRemoved: progress.redisRemoved,
      userTables: progress.userTables,
      hllExpireBy: new Date(Date.now() + e.retentionMs + 86_400_000).toISOString(),
    },
    input.users,
  );
  progress.step = 'finished';
  if (progress.failures.length > 0) {
    throw ApplicationFailure.create({
      type: 'ErasureRecomputeFailed',
      message: failuresMessage(`erasure ${input.requestId}: the lake holds no trace of the users, but recomputing`, progress.failures, progress.periods.hourly.total + progress.periods.daily.total),
      nonRetryable: true,
      details: [progress],
    });
  }
  return { requestId: input.requestId, auditKey, rounds: progress.round, progress };
}
