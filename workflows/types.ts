/** Data that crosses the workflow/activity/client boundary (plain JSON, no classes). */
import type { PeriodKind } from '../common/lake';

/** Configuration the workflows need, read once per run through a local activity (workflows cannot read env). */
export interface OrchestrationSettings {
  idPrefix: string;
  activityTimeoutMs: number;
  heartbeatTimeoutMs: number;
  maxAttempts: number;
  retryInitialMs: number;
  retryMaxMs: number;
  childConcurrency: number;
  conflictRetryMs: number;
  conflictMaxRetries: number;
  backfillConcurrency: number;
  backfillPeriodsPerRun: number;
}

/** What a published run reports back: the manifest without its (possibly long) input list. */
export interface RunSummary {
  kind: PeriodKind;
  period: string;
  runId: string;
  publishedAt: string;
  inputs: number;
  rowCounts: Record<string, number>;
  shards?: number;
}

export type PrepareDayResult =
  | { ready: true; shards: number; processedRows: number }
  | { ready: false; missingHours: string[] };

export type DayInOneStepResult = { ready: true; summary: RunSummary } | { ready: false; missingHours: string[] };

export interface LateData {
  hourly: string[];
  daily: string[];
}

export interface PeriodFailure {
  period: string;
  workflowId: string;
  error: string;
  /** Failure type of the root cause (e.g. CorruptObjectError) and the object it names, when there is one. */
  type?: string;
  objectKey?: string;
}

export interface BackfillInput {
  kind: PeriodKind;
  from: string;
  to: string;
  concurrency?: number;
  /**
   * Daily only. `steps` (the default): each day's missing hours in one step, ahead of the
   * days in order, and each day in one step; `children`: as the schedules run them, an
   * hourly child workflow per hour and the day's shards as activities.
   */
  mode?: BackfillMode;
  /** Continue-as-new after this many periods (defaults to config). */
  periodsPerRun?: number;
  /** Carried across continue-as-new. */
  state?: BackfillCarry;
}

export type BackfillMode = 'steps' | 'children';

export interface BackfillCarry {
  next: number;
  done: number;
  failures: PeriodFailure[];
  runs: number;
}

export interface BackfillProgress {
  kind: PeriodKind;
  first: string;
  last: string;
  total: number;
  done: number;
  failed: number;
  running: number;
  remaining: number;
  runningPeriods: string[];
  failures: PeriodFailure[];
  /** Workflow runs so far (continue-as-new starts a new one). */
  run: number;
  state: 'running' | 'cancelling' | 'finished';
}

export interface FanOutResult {
  done: string[];
  failures: PeriodFailure[];
}

/**
 * Failure types no retry can fix (declared here, not in activities.ts, so the
 * workflow bundle can use them without pulling in the batch layer).
 */
export const NON_RETRYABLE_TYPES = ['NonRetryableBatchError', 'CorruptObjectError', 'MissingHoursError', 'QualityCheckError', 'InvalidPeriodError', 'RawInputGoneError'];

/** What starts an erasure: the request id (derived from the users) and the users themselves. */
export interface ErasureInput {
  requestId: string;
  users: string[];
  requestedAt: string;
}

export type ErasureStepName = 'starting' | 'scanning' | 'rewriting raw' | 'rewriting published' | 'redis' | 'recomputing hours' | 'recomputing days' | 'waiting out the grace' | 'removing superseded' | 'auditing' | 'finished';

/** The erasure workflow's progress (query `erasureProgress`): counts only, never an id. */
export interface ErasureProgress {
  requestId: string;
  users: number;
  step: ErasureStepName;
  round: number;
  objectsScanned: number;
  rewritten: { raw: number; dlq: number; published: number };
  rowsRemoved: number;
  objectsRemoved: number;
  redisRemoved: number;
  periods: { hourly: { done: number; total: number }; daily: { done: number; total: number } };
  failures: PeriodFailure[];
  userTables: string[];
}
