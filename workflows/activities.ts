/**
 * Activities: every piece of I/O the batch workflows do. Each wraps one
 * batch-layer step, heartbeats while it runs (so a dead worker is noticed and
 * a cancellation reaches the job), and turns the batch layer's bad-input
 * errors into non-retryable failures, so retries are spent only on what a
 * retry can fix.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { Redis } from 'ioredis';
import {
  BatchCancelledError,
  CorruptObjectError,
  MissingHoursError,
  NonRetryableBatchError,
  QualityCheckError,
  applyRetention,
  collectSupersededRuns,
  compactHour,
  computeWatermark,
  discardStaging,
  prepareDaily,
  publishDaily,
  runDaily,
  runDailyShard,
  runHourly,
  runHours,
  hoursOfDay,
  listDirty,
  usableHours,
  jobContext,
  type CompactionResult,
  type GcResult,
  type JobContext,
  type RetentionResult,
  type ShardResult,
} from '../batch-layer/jobs';
import { redisClient } from '../common/clients';
import type { Config } from '../common/config';
import type { RunManifest, Watermark } from '../common/lake';
import { logger } from '../common/log';
import { speedKeys } from '../common/speed-keys';
import { createErasureActivities } from './erasure-activities';
import type { DayInOneStepResult, LateData, OrchestrationSettings, PrepareDayResult, RunSummary } from './types';

function summarize(m: RunManifest): RunSummary {
  return {
    kind: m.kind,
    period: m.period,
    runId: m.runId,
    publishedAt: m.publishedAt,
    inputs: m.inputs.length,
    rowCounts: m.rowCounts,
    ...(m.shards !== undefined ? { shards: m.shards } : {}),
  };
}

async function runHoursIn(ctx: JobContext, hours: readonly string[], runIdTag: string): Promise<string[]> {
  if (hours.length === 0) return [];
  return (await runHours(ctx, hours, { runIdOf: (hour) => `hourly-${hour}-${runIdTag}` })).map((m) => m.period);
}

/** Maps batch-layer errors to Temporal failures; anything else stays retryable. */
export function toFailure(err: unknown): unknown {
  if (err instanceof CorruptObjectError) {
    return ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true, details: [{ key: err.key, reason: err.reason }] });
  }
  if (err instanceof MissingHoursError) {
    return ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true, details: [{ day: err.day, hours: err.hours }] });
  }
  if (err instanceof QualityCheckError) {
    return ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true, details: [{ period: err.period, checks: err.checks }] });
  }
  if (err instanceof NonRetryableBatchError) {
    return ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true });
  }
  return err;
}

export function createActivities(cfg: Config) {
  const log = logger('batch-activities');
  let redis: Redis | undefined;

  /** Runs one batch step with heartbeats and the activity's cancellation signal. */
  async function step<T>(fn: (ctx: JobContext) => Promise<T>): Promise<T> {
    const actx = Context.current();
    const info = actx.info;
    let last: unknown;
    const ctx: JobContext = jobContext(cfg, log.child({ activity: info.activityType, workflowId: info.workflowExecution?.workflowId, attempt: info.attempt }), {
      heartbeat: (details) => {
        last = details;
        actx.heartbeat(details);
      },
      signal: actx.cancellationSignal,
    });
    // DuckDB statements can run longer than the heartbeat timeout between two checkpoints;
    // a steady beat keeps the step alive while this process is, and lets cancellation in.
    const every = Math.max(1000, Math.floor((info.heartbeatTimeoutMs ?? 30_000) / 3));
    const timer = setInterval(() => actx.heartbeat(last), every);
    try {
      return await fn(ctx);
    } catch (err) {
      // Temporal records the step as cancelled (not failed) only when it ends with a CancelledFailure.
      if (actx.cancellationSignal.aborted || err instanceof BatchCancelledError) {
        const reason: unknown = actx.cancellationSignal.reason;
        throw reason instanceof CancelledFailure ? reason : new CancelledFailure(`cancelled: ${(err as Error).message}`);
      }
      throw toFailure(err);
    } finally {
      clearInterval(timer);
    }
  }

  const activities = {
    /** Local activity: the settings workflows need, from this worker's config. */
    async orchestrationSettings(): Promise<OrchestrationSettings> {
      const o = cfg.orchestration;
      return {
        idPrefix: o.workflowIdPrefix,
        activityTimeoutMs: o.activityTimeoutSec * 1000,
        heartbeatTimeoutMs: o.activityHeartbeatSec * 1000,
        maxAttempts: o.activityMaxAttempts,
        retryInitialMs: o.activityRetryInitialMs,
        retryMaxMs: o.activityRetryMaxMs,
        childConcurrency: o.childConcurrency,
        conflictRetryMs: o.conflictRetrySec * 1000,
        conflictMaxRetries: o.conflictMaxRetries,
        backfillConcurrency: o.backfillConcurrency,
        backfillPeriodsPerRun: o.backfillPeriodsPerRun,
      };
    },

    /** Stages the hour's raw objects, computes and publishes the hourly tables. */
    async runHour(hour: string, runId: string): Promise<RunSummary> {
      return step(async (ctx) => summarize(await runHourly(ctx, hour, { runId })));
    },

    /**
     * A backfill's hours of one day, in one step (runHours: one DuckDB, each neighbour
     * index read once): those not published or dirty. `runIdTag` makes each hour's run
     * id stable across retries, like hourlyBatch's.
     */
    async runMissingHours(day: string, runIdTag: string): Promise<string[]> {
      return step(async (ctx) => {
        const { usable } = await usableHours(ctx);
        return runHoursIn(ctx, hoursOfDay(day).filter((h) => !usable(h)), runIdTag);
      });
    },

    /** Given hours in one step (a day's missing ones, from dailyBatch in backfill mode). */
    async runHours(hours: string[], runIdTag: string): Promise<string[]> {
      return step((ctx) => runHoursIn(ctx, hours, runIdTag));
    },

    /**
     * A backfill's day in one step: prepare, shards and publish in this process, handing
     * over in one DuckDB instead of through S3 (the same bytes: batch-jobs.test.ts). Reports
     * the hours it still needs instead of failing on them.
     */
    async runDayInOneStep(day: string, runId: string): Promise<DayInOneStepResult> {
      return step(async (ctx) => {
        try {
          return { ready: true, summary: summarize(await runDaily(ctx, day, { runId, shards: cfg.batch.shards })) };
        } catch (err) {
          if (err instanceof MissingHoursError) return { ready: false, missingHours: err.hours };
          throw err;
        }
      });
    },

    /** Splits the day into user-hash shards; reports the hours it still needs instead of failing on them. */
    async prepareDay(day: string, runId: string): Promise<PrepareDayResult> {
      return step(async (ctx) => {
        try {
          const plan = await prepareDaily(ctx, day, runId, cfg.batch.shards);
          return { ready: true, shards: plan.shards, processedRows: plan.processedRows };
        } catch (err) {
          if (err instanceof MissingHoursError) return { ready: false, missingHours: err.hours };
          throw err;
        }
      });
    },

    async runDayShard(day: string, runId: string, shard: number, shards: number): Promise<ShardResult> {
      return step((ctx) => runDailyShard(ctx, day, runId, shard, shards));
    },

    async publishDay(day: string, runId: string, shards: number): Promise<RunSummary> {
      return step(async (ctx) => summarize(await publishDaily(ctx, day, runId, shards)));
    },

    /** Removes a failed or cancelled run's staged objects. */
    async discardRun(runId: string): Promise<void> {
      return step((ctx) => discardStaging(ctx, runId));
    },

    async compactRawHour(hour: string): Promise<CompactionResult> {
      return step((ctx) => compactHour(ctx, hour));
    },

    /** Periods with a dirty marker (late data arrived after they were computed). */
    async findLateData(): Promise<LateData> {
      return step(async (ctx) => {
        const dirty = await listDirty(ctx);
        return {
          hourly: dirty.filter((d) => d.kind === 'hourly').map((d) => d.period),
          daily: dirty.filter((d) => d.kind === 'daily').map((d) => d.period),
        };
      });
    },

    /** Recomputes the watermark from the manifests and tells the serving layer (Redis pub/sub). */
    async announceWatermark(): Promise<Watermark> {
      return step(async (ctx) => {
        const watermark = await computeWatermark(ctx);
        redis ??= redisClient(cfg);
        const listeners = await redis.publish(speedKeys(cfg).watermarkChannel(), JSON.stringify(watermark));
        ctx.log.info({ channel: speedKeys(cfg).watermarkChannel(), listeners, hourlyEnd: watermark.hourlyEnd, dailyEnd: watermark.dailyEnd }, 'watermark announced');
        return watermark;
      });
    },

    /** Raw days older than the configured age, whose daily run is published and clean, are removed. */
    async removeExpiredRaw(nowMs: number): Promise<RetentionResult> {
      return step((ctx) => applyRetention(ctx, { rawMaxAgeDays: cfg.batch.rawMaxAgeDays, now: nowMs }));
    },

    /** Batch outputs of superseded or unfinished runs, once BATCH_SUPERSEDED_GRACE_MS has passed. */
    async collectOldRuns(nowMs: number): Promise<{ folders: number; deleted: number; waiting: number }> {
      return step(async (ctx) => {
        const r: GcResult = await collectSupersededRuns(ctx, { now: nowMs });
        // The keys can be many and are logged; the workflow history keeps the counts.
        return { folders: r.folders, deleted: r.deleted.length, waiting: r.waiting };
      });
    },
  };

  /** Releases the Redis connection when the worker stops. */
  async function close(): Promise<void> {
    await redis?.quit().catch(() => undefined);
  }

  // The erasure steps (erasure-activities.ts) share this worker's step wrapper and Redis connection.
  return { activities: Object.assign(activities, createErasureActivities(cfg, step, () => (redis ??= redisClient(cfg)))), close };
}

export type BatchActivities = ReturnType<typeof createActivities>['activities'];
