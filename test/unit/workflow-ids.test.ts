/** Pure parts of the orchestration: ids, period ranges, schedule specs, failure mapping. No server. */
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { CorruptObjectError, MissingHoursError, NonRetryableBatchError } from '../../batch-layer/jobs';
import { toFailure } from '../../workflows/activities';
import { runsQuery } from '../../workflows/cli/runs';
import {
  InvalidPeriodError,
  backfillWorkflowId,
  checkPeriod,
  periodAt,
  periodWorkflowId,
  planRange,
  previousDay,
  previousHour,
  workflowUiUrl,
} from '../../workflows/ids';
import { scheduleDefinitions } from '../../workflows/schedules';

const NOW = Date.parse('2026-11-21T13:05:00Z');

describe('workflow ids', () => {
  it('derive from kind and period', () => {
    expect(periodWorkflowId('', 'hourly', '2026-11-20T13')).toBe('hourly-2026-11-20T13');
    expect(periodWorkflowId('', 'daily', '2026-11-20')).toBe('daily-2026-11-20');
    expect(backfillWorkflowId('', 'daily', '2026-11-01', '2026-11-20')).toBe('backfill-daily-2026-11-01..2026-11-20');
    expect(periodWorkflowId('t-x-', 'hourly', '2026-11-20T13')).toBe('t-x-hourly-2026-11-20T13');
  });

  it('link to the Temporal UI', () => {
    expect(workflowUiUrl('http://localhost:8233', 'default', 'daily-2026-11-20')).toBe('http://localhost:8233/namespaces/default/workflows/daily-2026-11-20');
  });
});

describe('scheduled periods', () => {
  it('are the hour and the day that had ended at the scheduled time', () => {
    expect(previousHour(NOW)).toBe('2026-11-21T12');
    expect(previousHour(Date.parse('2026-11-21T00:05:00Z'))).toBe('2026-11-20T23');
    expect(previousDay(Date.parse('2026-11-21T00:30:00Z'))).toBe('2026-11-20');
    expect(previousDay(Date.parse('2026-03-01T00:30:00Z'))).toBe('2026-02-28');
  });
});

describe('checkPeriod', () => {
  it('accepts a finished period and refuses malformed, impossible and unfinished ones', () => {
    expect(() => checkPeriod('hourly', '2026-11-21T12', NOW)).not.toThrow();
    expect(() => checkPeriod('hourly', '2026-11-21T13', NOW)).toThrow(/in the future/);
    expect(() => checkPeriod('daily', '2026-11-21', NOW)).toThrow(/in the future/);
    expect(() => checkPeriod('hourly', '2026-11-20T24', NOW)).toThrow(/malformed/);
    expect(() => checkPeriod('daily', '2026-02-30', NOW)).toThrow(InvalidPeriodError);
    expect(() => checkPeriod('daily', '2026-11-20T01', NOW)).toThrow(/malformed/);
  });
});

describe('planRange', () => {
  it('counts inclusive daily and hourly ranges; days expand to their hours', () => {
    expect(planRange('daily', '2026-11-01', '2026-11-20', NOW)).toEqual({ kind: 'daily', first: '2026-11-01', last: '2026-11-20', count: 20 });
    expect(planRange('hourly', '2026-11-19', '2026-11-20', NOW)).toEqual({ kind: 'hourly', first: '2026-11-19T00', last: '2026-11-20T23', count: 48 });
    expect(planRange('hourly', '2026-11-21T10', '2026-11-21T12', NOW).count).toBe(3);
    expect(planRange('daily', '2026-11-20', '2026-11-20', NOW).count).toBe(1);
  });

  it('enumerates periods lazily, across month ends', () => {
    const r = planRange('daily', '2026-10-30', '2026-11-02', NOW);
    expect(Array.from({ length: r.count }, (_, i) => periodAt(r, i))).toEqual(['2026-10-30', '2026-10-31', '2026-11-01', '2026-11-02']);
    const h = planRange('hourly', '2026-10-31T22', '2026-11-01T01', NOW);
    expect(Array.from({ length: h.count }, (_, i) => periodAt(h, i))).toEqual(['2026-10-31T22', '2026-10-31T23', '2026-11-01T00', '2026-11-01T01']);
  });

  it('refuses reversed, empty, malformed and future ranges with a clear message', () => {
    expect(() => planRange('daily', '2026-11-20', '2026-11-01', NOW)).toThrow(/reversed: --from 2026-11-20 is after --to 2026-11-01/);
    expect(() => planRange('daily', '', '2026-11-01', NOW)).toThrow(/empty/);
    expect(() => planRange('daily', '2026-11-01T03', '2026-11-02', NOW)).toThrow(/malformed/);
    expect(() => planRange('daily', '2026-11-31', '2026-12-02', NOW)).toThrow(/not a real date/);
    expect(() => planRange('daily', '2026-11-01', '2026-11-21', NOW)).toThrow(/into the future.*2026-11-21/);
    expect(() => planRange('hourly', '2026-11-21T12', '2026-11-21T13', NOW)).toThrow(/into the future/);
    expect(() => planRange('weekly' as 'daily', '2026-11-01', '2026-11-02', NOW)).toThrow(/kind/);
  });
});

describe('schedules', () => {
  it('run the previous hour a few minutes past each hour, the previous day after midnight, reconciliation every 15 min', () => {
    const cfg = loadConfig({ SCHEDULE_HOURLY_MINUTE: '7', SCHEDULE_DAILY_MINUTE: '90', SCHEDULE_CATCHUP_WINDOW_SEC: '3600' });
    const d = scheduleDefinitions(cfg);
    expect(d.hourly.scheduleId).toBe('batch-hourly');
    expect(d.hourly.spec.cronExpressions).toEqual(['7 * * * *']);
    expect(d.daily.spec.cronExpressions).toEqual(['30 1 * * *']);
    expect(d.reconcile.spec.intervals).toEqual([{ every: 15 * 60_000 }]);
    expect(d.hourly.policies?.catchupWindow).toBe(3_600_000);
    expect(d.hourly.action.args).toEqual([]);
    expect(d.hourly.action.workflowType).toBe('hourlyBatch');
    expect(d.hourly.action.workflowId).toBe('scheduled-hourly');
  });
});

describe('activity failures', () => {
  it('make bad input and corrupt objects non-retryable, naming the object; leave other errors retryable', () => {
    const corrupt = toFailure(new CorruptObjectError('raw/events/dt=2026-11-20/hour=13/p0-0-9.parquet', 'no magic bytes'));
    expect(corrupt).toBeInstanceOf(ApplicationFailure);
    expect(corrupt).toMatchObject({ type: 'CorruptObjectError', nonRetryable: true, details: [{ key: 'raw/events/dt=2026-11-20/hour=13/p0-0-9.parquet' }] });
    expect(toFailure(new MissingHoursError('2026-11-20', ['2026-11-20T01']))).toMatchObject({ type: 'MissingHoursError', nonRetryable: true });
    expect(toFailure(new NonRetryableBatchError('period in the future'))).toMatchObject({ type: 'NonRetryableBatchError', nonRetryable: true });
    const transient = new Error('ECONNRESET');
    expect(toFailure(transient)).toBe(transient);
  });
});

describe('runs list query', () => {
  it('selects batch runs by kind, period, status and id prefix', () => {
    const cfg = loadConfig({ TEMPORAL_WORKFLOW_ID_PREFIX: 't-x-' });
    expect(runsQuery(cfg, { kind: 'daily', period: '2026-11-20', status: 'continued_as_new' })).toBe(
      "BatchKind IS NOT NULL AND BatchKind = 'daily' AND BatchPeriod = '2026-11-20' AND ExecutionStatus = 'ContinuedAsNew' AND WorkflowId STARTS_WITH 't-x-'",
    );
  });
});
