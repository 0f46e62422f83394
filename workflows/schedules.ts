/**
 * The batch schedules, created (or brought up to date) idempotently each time
 * a worker starts. Every schedule starts a workflow that derives its period
 * from the scheduled time, then runs that period under the period's own id.
 */
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client, type ScheduleOptions } from '@temporalio/client';
import type { Config } from '../common/config';
import { SCHEDULE_NAMES, scheduleId, scheduleUiUrl, type ScheduleName } from './ids';
import { batchAttributes } from './search-attributes';

export function scheduleDefinitions(cfg: Config): Record<ScheduleName, ScheduleOptions> {
  const o = cfg.orchestration;
  const base = (name: ScheduleName, workflowType: string, kind: Parameters<typeof batchAttributes>[0]) => ({
    type: 'startWorkflow' as const,
    workflowType,
    taskQueue: cfg.temporal.taskQueue,
    // The server appends the scheduled time to this id.
    workflowId: `${o.workflowIdPrefix}scheduled-${name}`,
    args: [],
    typedSearchAttributes: batchAttributes(kind),
    memo: { schedule: scheduleId(o.scheduleIdPrefix, name) },
  });
  const catchupWindow = o.catchupWindowSec * 1000;
  return {
    hourly: {
      scheduleId: scheduleId(o.scheduleIdPrefix, 'hourly'),
      spec: { cronExpressions: [`${o.hourlyMinute % 60} * * * *`] },
      action: base('hourly', 'hourlyBatch', 'scheduled-hourly'),
      // A slow hour delays the next instead of dropping it; the period ids keep them apart.
      policies: { overlap: ScheduleOverlapPolicy.BUFFER_ONE, catchupWindow },
    },
    daily: {
      scheduleId: scheduleId(o.scheduleIdPrefix, 'daily'),
      spec: { cronExpressions: [`${o.dailyMinute % 60} ${Math.floor(o.dailyMinute / 60) % 24} * * *`] },
      action: base('daily', 'dailyBatch', 'scheduled-daily'),
      policies: { overlap: ScheduleOverlapPolicy.BUFFER_ONE, catchupWindow },
    },
    reconcile: {
      scheduleId: scheduleId(o.scheduleIdPrefix, 'reconcile'),
      spec: { intervals: [{ every: o.reconcileEveryMin * 60_000 }] },
      action: { ...base('reconcile', 'reconcileLateData', 'reconcile') },
      // Each round looks at every dirty marker: a skipped round loses nothing.
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow },
    },
    retention: {
      scheduleId: scheduleId(o.scheduleIdPrefix, 'retention'),
      spec: { cronExpressions: [`0 ${o.retentionHour % 24} * * *`] },
      action: base('retention', 'applyRetention', 'retention'),
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow },
    },
    compact: {
      scheduleId: scheduleId(o.scheduleIdPrefix, 'compact'),
      spec: { cronExpressions: [`0 ${o.compactHour % 24} * * *`] },
      // Compacts the day before the scheduled time; a skipped round leaves small objects, loses nothing.
      action: base('compact', 'compactLake', 'compact'),
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow },
    },
  };
}

export interface EnsuredSchedule {
  name: ScheduleName;
  scheduleId: string;
  outcome: 'created' | 'updated';
  url: string;
}

/** Creates each schedule, or updates it in place when it exists (keeping whether an operator paused it). */
export async function ensureSchedules(client: Client, cfg: Config): Promise<EnsuredSchedule[]> {
  const defs = scheduleDefinitions(cfg);
  const out: EnsuredSchedule[] = [];
  for (const name of SCHEDULE_NAMES) {
    const def = defs[name];
    let outcome: EnsuredSchedule['outcome'] = 'created';
    try {
      await client.schedule.create(def);
    } catch (err) {
      if (!(err instanceof ScheduleAlreadyRunning)) throw err;
      outcome = 'updated';
      await client.schedule.getHandle(def.scheduleId).update((prev) => ({
        spec: def.spec,
        action: def.action,
        policies: { ...prev.policies, ...def.policies },
        typedSearchAttributes: prev.typedSearchAttributes,
        state: { paused: prev.state.paused, note: prev.state.note, remainingActions: prev.state.remainingActions },
      }));
    }
    out.push({ name, scheduleId: def.scheduleId, outcome, url: scheduleUiUrl(cfg.temporal.uiUrl, cfg.temporal.namespace, def.scheduleId) });
  }
  return out;
}
