/**
 * What every job step receives: config, logger and the lake's S3 client, built by
 * jobContext(). Temporal activities add the activity's heartbeat and cancellation
 * signal; scripts and tests pass a config and a logger.
 */
import { randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { DAY_RE, HOUR_RE, dayStartMs, hourStartMs, type PeriodKind } from '../../common/lake';
import type { Logger } from '../../common/log';
import { BatchCancelledError, NonRetryableBatchError } from './errors';

export interface JobContext {
  cfg: Config;
  log: Logger;
  /** The lake: `bucket` (cfg.s3.bucket) through this client. */
  s3: S3Client;
  bucket: string;
  heartbeat?: (details?: unknown) => void;
  signal?: AbortSignal;
  /** When given, every timed step adds its wall seconds here (bench/batch.ts prints them). */
  timings?: Record<string, number>;
}

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

const clients = new WeakMap<Config, S3Client>();

/**
 * A context for jobs run with this config. Contexts of one config share one S3 client
 * (each activity builds its own context; connections stay pooled across them).
 */
export function jobContext(cfg: Config, log: Logger, opts: Pick<JobContext, 'heartbeat' | 'signal' | 'timings'> = {}): JobContext {
  let s3 = clients.get(cfg);
  if (!s3) {
    s3 = s3Client(cfg);
    clients.set(cfg, s3);
  }
  return { cfg, log, s3, bucket: cfg.s3.bucket, ...opts };
}

/** Throws when the run was cancelled; called between steps so cancellation lands within one step. */
export function checkpoint(ctx: JobContext, details?: unknown): void {
  if (ctx.signal?.aborted) throw new BatchCancelledError(`cancelled: ${String(ctx.signal.reason ?? 'aborted')}`);
  ctx.heartbeat?.(details);
}

/**
 * Heartbeats every few seconds while one long step runs (a single DuckDB
 * statement over a day can outlast a heartbeat timeout). Returns the stop function.
 */
export function keepAlive(ctx: JobContext, step: string, everyMs = 5000): () => void {
  if (!ctx.heartbeat) return () => {};
  const timer = setInterval(() => ctx.heartbeat?.({ step, alive: true }), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Runs one named step, logging its wall time at debug and adding it to ctx.timings. */
export async function timed<T>(ctx: JobContext, step: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    const seconds = (performance.now() - t0) / 1000;
    if (ctx.timings) ctx.timings[step] = (ctx.timings[step] ?? 0) + seconds;
    ctx.log.debug({ step, seconds: +seconds.toFixed(3) }, 'step done');
  }
}

export interface Period {
  kind: PeriodKind;
  id: string;
  startMs: number;
  endMs: number;
}

/**
 * Parses and validates a period. A period that has not ended yet is rejected as
 * "in the future": publishing it would let the watermark pass data still arriving.
 */
export function parsePeriod(kind: PeriodKind, id: string, now = Date.now()): Period {
  const re = kind === 'hourly' ? HOUR_RE : DAY_RE;
  const startMs = re.test(id) ? (kind === 'hourly' ? hourStartMs(id) : dayStartMs(id)) : NaN;
  if (!Number.isFinite(startMs) || new Date(startMs).toISOString().slice(0, id.length) !== id) {
    throw new NonRetryableBatchError(`malformed ${kind} period "${id}" (expected ${kind === 'hourly' ? 'YYYY-MM-DDTHH' : 'YYYY-MM-DD'}, UTC)`);
  }
  const endMs = startMs + (kind === 'hourly' ? HOUR_MS : DAY_MS);
  if (endMs > now) {
    throw new NonRetryableBatchError(`${kind} period ${id} is in the future (it ends ${new Date(endMs).toISOString()}, now ${new Date(now).toISOString()})`);
  }
  return { kind, id, startMs, endMs };
}

export function hoursOfDay(day: string): string[] {
  return Array.from({ length: 24 }, (_, h) => `${day}T${String(h).padStart(2, '0')}`);
}

export function previousDay(day: string): string {
  return new Date(dayStartMs(day) - DAY_MS).toISOString().slice(0, 10);
}

export function newRunId(kind: PeriodKind, period: string, now = Date.now()): string {
  return `${kind}-${period}-${now}-${randomBytes(3).toString('hex')}`;
}

/** Runs `fn` over `items` with at most `limit` in flight; results keep the items' order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return out;
}
