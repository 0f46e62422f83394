/**
 * Workflow ids, schedule ids and period ranges. Pure functions shared by the
 * workflows (deterministic, inside the workflow bundle) and the clients (CLIs,
 * worker, tests), so both sides always agree on which id a period runs under.
 */
import { DAY_RE, HOUR_RE, dayStartMs, hourStartMs, type PeriodKind } from '../common/lake';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

/** `hourly-2026-11-20T13`, `daily-2026-11-20`: one id per period, so a period never runs twice at once. */
export function periodWorkflowId(prefix: string, kind: PeriodKind, period: string): string {
  return `${prefix}${kind}-${period}`;
}

/** `backfill-daily-2026-11-01..2026-11-20` */
export function backfillWorkflowId(prefix: string, kind: PeriodKind, from: string, to: string): string {
  return `${prefix}backfill-${kind}-${from}..${to}`;
}

export function compactWorkflowId(prefix: string, day: string): string {
  return `${prefix}compact-${day}`;
}

/** `erasure-er-<16 hex>`: one workflow per erasure request (its id derives from the set of users). */
export function erasureWorkflowId(prefix: string, requestId: string): string {
  return `${prefix}erasure-${requestId}`;
}

export const SCHEDULE_NAMES = ['hourly', 'daily', 'reconcile', 'retention', 'compact'] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];

export function scheduleId(prefix: string, name: ScheduleName): string {
  return `${prefix}${name}`;
}

export function workflowUiUrl(uiUrl: string, namespace: string, workflowId: string, runId?: string): string {
  const base = `${uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${base}/${encodeURIComponent(runId)}` : base;
}

export function scheduleUiUrl(uiUrl: string, namespace: string, id: string): string {
  return `${uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/schedules/${encodeURIComponent(id)}`;
}

export function hourOfMs(ms: number): string {
  return new Date(ms).toISOString().slice(0, 13);
}

export function dayOfMs(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The last hour that had ended at `ms` (a run at 13:05 processes 12:00-13:00). */
export function previousHour(ms: number): string {
  return hourOfMs(Math.floor(ms / HOUR_MS) * HOUR_MS - HOUR_MS);
}

/** The last day that had ended at `ms`. */
export function previousDay(ms: number): string {
  return dayOfMs(Math.floor(ms / DAY_MS) * DAY_MS - DAY_MS);
}

export function periodStartMs(kind: PeriodKind, period: string): number {
  return kind === 'hourly' ? hourStartMs(period) : dayStartMs(period);
}

export function periodEndMs(kind: PeriodKind, period: string): number {
  return periodStartMs(kind, period) + (kind === 'hourly' ? HOUR_MS : DAY_MS);
}

/** Bad input (malformed, reversed, empty or future range): nothing should be started. */
export class InvalidPeriodError extends Error {
  override name = 'InvalidPeriodError';
}

function isRealPeriod(re: RegExp, text: string, startMs: number): boolean {
  return re.test(text) && Number.isFinite(startMs) && new Date(startMs).toISOString().slice(0, text.length) === text;
}

/** Validates one period: well-formed, a real calendar date, and already over at `nowMs`. */
export function checkPeriod(kind: PeriodKind, period: string, nowMs: number): void {
  const re = kind === 'hourly' ? HOUR_RE : DAY_RE;
  const start = re.test(period) ? periodStartMs(kind, period) : NaN;
  if (!isRealPeriod(re, period, start)) {
    throw new InvalidPeriodError(`malformed ${kind} period "${period}" (expected ${kind === 'hourly' ? 'YYYY-MM-DDTHH' : 'YYYY-MM-DD'}, UTC)`);
  }
  const end = periodEndMs(kind, period);
  if (end > nowMs) {
    throw new InvalidPeriodError(`${kind} period ${period} is in the future: it ends ${new Date(end).toISOString()}, now is ${new Date(nowMs).toISOString()}`);
  }
}

/** Parses a range bound: a day (`YYYY-MM-DD`), or for hourly ranges also an hour (`YYYY-MM-DDTHH`). */
function boundStartMs(kind: PeriodKind, bound: string, which: 'from' | 'to'): number {
  if (DAY_RE.test(bound)) {
    const start = dayStartMs(bound);
    if (!isRealPeriod(DAY_RE, bound, start)) throw new InvalidPeriodError(`--${which} "${bound}" is not a real date`);
    // An hourly range `--to <day>` includes that day's last hour.
    return kind === 'hourly' && which === 'to' ? start + DAY_MS - HOUR_MS : start;
  }
  if (kind === 'hourly' && HOUR_RE.test(bound)) {
    const start = hourStartMs(bound);
    if (!isRealPeriod(HOUR_RE, bound, start)) throw new InvalidPeriodError(`--${which} "${bound}" is not a real hour`);
    return start;
  }
  throw new InvalidPeriodError(
    `--${which} "${bound}" is malformed: expected ${kind === 'hourly' ? 'YYYY-MM-DD or YYYY-MM-DDTHH' : 'YYYY-MM-DD'} (UTC)`,
  );
}

export interface PeriodRange {
  kind: PeriodKind;
  /** First and last period, inclusive, normalised (`2026-11-01` becomes `2026-11-01T00` for hourly). */
  first: string;
  last: string;
  count: number;
}

/**
 * Validates an inclusive range of periods. Reversed, empty, malformed or not
 * yet finished ranges are refused as a whole: a backfill either covers what
 * was asked or does not start.
 */
export function planRange(kind: PeriodKind, from: string, to: string, nowMs: number): PeriodRange {
  if (kind !== 'hourly' && kind !== 'daily') throw new InvalidPeriodError(`kind must be "hourly" or "daily", got "${String(kind)}"`);
  if (!from || !to) throw new InvalidPeriodError('the range is empty: give both --from and --to');
  const step = kind === 'hourly' ? HOUR_MS : DAY_MS;
  const start = boundStartMs(kind, from, 'from');
  const last = boundStartMs(kind, to, 'to');
  if (last < start) throw new InvalidPeriodError(`the range is reversed: --from ${from} is after --to ${to}`);
  const count = Math.floor((last - start) / step) + 1;
  const fmt = kind === 'hourly' ? hourOfMs : dayOfMs;
  if (last + step > nowMs) {
    throw new InvalidPeriodError(
      `the range reaches into the future: ${kind} period ${fmt(last)} ends ${new Date(last + step).toISOString()}, now is ${new Date(nowMs).toISOString()}`,
    );
  }
  return { kind, first: fmt(start), last: fmt(last), count };
}

/** The i-th period of a range (0-based); ranges are enumerated lazily so a year of hours never sits in history. */
export function periodAt(range: Pick<PeriodRange, 'kind' | 'first'>, i: number): string {
  const step = range.kind === 'hourly' ? HOUR_MS : DAY_MS;
  const t = periodStartMs(range.kind, range.first) + i * step;
  return range.kind === 'hourly' ? hourOfMs(t) : dayOfMs(t);
}
