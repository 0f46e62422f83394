/**
 * Raw retention: remove raw days older than the configured age. A day is removed
 * only once its daily run is published and neither it nor any of its hours is
 * dirty — raw is the master dataset, and a day not yet folded into the batch
 * views would be lost for good. Each removed day gets a record under
 * `_manifests/retention/raw/` first, and its periods then refuse to recompute
 * (RawInputGoneError) instead of recomputing from what late data adds.
 *
 * The other zones: dead letters (raw/dlq/) go by age alone; processed/events and
 * processed/sessions (opt-in, older than raw) go once raw is gone, with the same
 * guard; aggregated/ (opt-in, older than processed) once processed is gone, and
 * serving stops loading those days. user_daily_activity (every later day's
 * first_seen history) and the manifests are kept.
 */
import { LAKE_TABLES, lakePaths, type RawRetentionRecord } from '../../common/lake';
import { deleteObjects, getJson, listObjects, putJson } from '../../common/lake-io';
import { DAY_MS, checkpoint, type JobContext } from './context';
import { NonRetryableBatchError } from './errors';
import { listDirty, listPublished } from './watermark';

export interface RetentionOptions {
  rawMaxAgeDays?: number;
  /** Dead letters (raw/dlq/) older than this many days of arrival are removed (default cfg.batch.dlqMaxAgeDays). */
  dlqMaxAgeDays?: number;
  /** processed/events and processed/sessions of days older than this are removed; 0 keeps them (default cfg.batch.processedMaxAgeDays). */
  processedMaxAgeDays?: number;
  /** aggregated/ (the batch views) of days older than this are removed; 0 keeps them (default cfg.batch.aggregatedMaxAgeDays). */
  aggregatedMaxAgeDays?: number;
  now?: number;
}

/** What the retention of one more zone removed. */
export interface ZoneRetention {
  cutoffDay: string;
  deletedDays: string[];
  deletedObjects: number;
  skipped: { day: string; reason: string }[];
}

/** The processed tables processed retention removes (the catalog's `expires`): events, sessions, event_ids. */
const PROCESSED_EXPIRING_TABLES = LAKE_TABLES.filter((t) => t.zone === 'processed' && t.expires).map((t) => t.table);

export interface RetentionResult {
  /** Raw days before this one are eligible. */
  cutoffDay: string;
  deletedDays: string[];
  deletedObjects: number;
  skipped: { day: string; reason: string }[];
  dlq?: ZoneRetention;
  processed?: ZoneRetention;
  aggregated?: ZoneRetention;
}

function cutoffOf(now: number, maxAgeDays: number): string {
  return new Date(Math.floor(now / DAY_MS) * DAY_MS - maxAgeDays * DAY_MS).toISOString().slice(0, 10);
}

function byDayBefore(keys: readonly string[], cutoffDay: string): Map<string, string[]> {
  const byDay = new Map<string, string[]>();
  for (const key of keys) {
    const m = /dt=(\d{4}-\d{2}-\d{2})\//.exec(key);
    if (!m || m[1] >= cutoffDay) continue;
    byDay.set(m[1], [...(byDay.get(m[1]) ?? []), key]);
  }
  return byDay;
}

type Zone = 'raw' | 'dlq' | 'processed' | 'aggregated';

interface ZoneRule {
  zone: Zone;
  maxAgeDays: number;
  /** The zone's objects; only those under a `dt=` day before the cutoff are candidates. */
  keys: string[];
  /** Why a day must stay, or null when it may go. */
  keep?(day: string): Promise<string | null>;
  /** Where the day's removal is recorded, before the delete (none for dead letters: nobody's input). */
  record?(day: string): string;
}

/** Removes a zone's days before its cutoff, oldest first, each recorded (where the zone has a record) before its delete. */
async function expireZone(ctx: JobContext, now: number, rule: ZoneRule): Promise<ZoneRetention> {
  const cutoffDay = cutoffOf(now, rule.maxAgeDays);
  const out: ZoneRetention = { cutoffDay, deletedDays: [], deletedObjects: 0, skipped: [] };
  for (const [day, dayKeys] of [...byDayBefore(rule.keys, cutoffDay)].sort(([a], [b]) => a.localeCompare(b))) {
    const reason = (await rule.keep?.(day)) ?? null;
    if (reason !== null) {
      out.skipped.push({ day, reason });
      continue;
    }
    if (rule.record && rule.zone !== 'dlq') {
      const record: RawRetentionRecord = { zone: rule.zone, day, removedAt: new Date().toISOString(), objects: dayKeys.length, maxAgeDays: rule.maxAgeDays };
      await putJson(ctx.s3, ctx.bucket, rule.record(day), record);
    }
    await deleteObjects(ctx.s3, ctx.bucket, dayKeys);
    out.deletedDays.push(day);
    out.deletedObjects += dayKeys.length;
    checkpoint(ctx, { step: 'retention', zone: rule.zone, day });
  }
  return out;
}

const keysUnder = async (ctx: JobContext, prefix: string): Promise<string[]> => (await listObjects(ctx.s3, ctx.bucket, prefix)).map((o) => o.key);
const hasRecord = (ctx: JobContext, key: string): Promise<boolean> => getJson<RawRetentionRecord>(ctx.s3, ctx.bucket, key).then((r) => r !== null);

/** Dead letters are nobody's input: they go by age of arrival alone. */
async function expireDlq(ctx: JobContext, maxAgeDays: number, now: number): Promise<ZoneRetention> {
  return expireZone(ctx, now, { zone: 'dlq', maxAgeDays, keys: await keysUnder(ctx, lakePaths.rawDlqPrefix) });
}

/**
 * processed/events and processed/sessions of a day are its daily run's input (and the
 * next day's binge window). They go only once the day's raw is gone too (then nothing
 * could recompute them anyway), after a record that makes a re-run of the day, or of the
 * next day, refuse (RawInputGoneError) instead of computing from a subset.
 */
async function expireProcessed(ctx: JobContext, maxAgeDays: number, now: number): Promise<ZoneRetention> {
  const keys: string[] = [];
  for (const table of PROCESSED_EXPIRING_TABLES) keys.push(...(await keysUnder(ctx, lakePaths.tableRoot('processed', table))));
  return expireZone(ctx, now, {
    zone: 'processed',
    maxAgeDays,
    keys,
    keep: async (day) => ((await hasRecord(ctx, lakePaths.rawRetention(day))) ? null : 'raw of the day is not removed yet'),
    record: (day) => lakePaths.processedRetention(day),
  });
}

/**
 * The batch views of a day (aggregated/…/dt=day/, hourly ones included) go only once
 * its processed input is gone too, so no run can publish them again. The record is
 * written first: the serving layer stops loading the day's periods (they answer from
 * the speed layer or `none`), and the manifests stay, because later days read the
 * day's user activity (first_seen) through them.
 */
async function expireAggregated(ctx: JobContext, maxAgeDays: number, now: number): Promise<ZoneRetention> {
  return expireZone(ctx, now, {
    zone: 'aggregated',
    maxAgeDays,
    keys: await keysUnder(ctx, 'aggregated/'),
    keep: async (day) => ((await hasRecord(ctx, lakePaths.processedRetention(day))) ? null : 'processed input of the day is not removed yet'),
    record: (day) => lakePaths.aggregatedRetention(day),
  });
}

export async function applyRetention(ctx: JobContext, opts: RetentionOptions = {}): Promise<RetentionResult> {
  const maxAge = opts.rawMaxAgeDays ?? ctx.cfg.batch.rawMaxAgeDays;
  if (!Number.isInteger(maxAge) || maxAge < 1) throw new NonRetryableBatchError(`rawMaxAgeDays must be an integer >= 1, got ${maxAge}`);
  const processedAge = opts.processedMaxAgeDays ?? ctx.cfg.batch.processedMaxAgeDays;
  const dlqAge = opts.dlqMaxAgeDays ?? ctx.cfg.batch.dlqMaxAgeDays;
  // Checked before anything is deleted.
  if (processedAge > 0 && processedAge <= maxAge) {
    throw new NonRetryableBatchError(`processedMaxAgeDays (${processedAge}) must be greater than rawMaxAgeDays (${maxAge}): processed data is what is left once raw is gone`);
  }
  const aggregatedAge = opts.aggregatedMaxAgeDays ?? ctx.cfg.batch.aggregatedMaxAgeDays;
  if (aggregatedAge > 0 && !(processedAge > 0 && aggregatedAge > processedAge)) {
    throw new NonRetryableBatchError(
      `aggregatedMaxAgeDays (${aggregatedAge}) needs processed retention on and must be greater than processedMaxAgeDays (${processedAge}): the views are what is left once processed data is gone`,
    );
  }
  const now = opts.now ?? Date.now();
  const published = new Set(await listPublished(ctx, 'daily'));
  const dirty = await listDirty(ctx);
  const raw = await expireZone(ctx, now, {
    zone: 'raw',
    maxAgeDays: maxAge,
    keys: await keysUnder(ctx, lakePaths.rawEventsPrefix),
    keep: async (day) => {
      if (!published.has(day)) return 'daily run not published';
      const dirtyHere = dirty.filter((d) => d.period.slice(0, 10) === day);
      return dirtyHere.length > 0 ? `dirty: ${dirtyHere.map((d) => d.period).join(', ')}` : null;
    },
    // Recorded before the delete: from here on the day's periods refuse to recompute (see raw-guard.ts).
    record: (day) => lakePaths.rawRetention(day),
  });
  const { cutoffDay } = raw;
  const result: RetentionResult = { ...raw };
  ctx.log.info({ cutoffDay, deletedDays: result.deletedDays.length, deletedObjects: result.deletedObjects, skipped: result.skipped.length }, 'raw retention applied');

  if (dlqAge > 0) {
    result.dlq = await expireDlq(ctx, dlqAge, now);
    ctx.log.info({ cutoffDay: result.dlq.cutoffDay, deletedDays: result.dlq.deletedDays.length, deletedObjects: result.dlq.deletedObjects }, 'dead-letter retention applied');
  }
  if (processedAge > 0) {
    result.processed = await expireProcessed(ctx, processedAge, now);
    ctx.log.info({ cutoffDay: result.processed.cutoffDay, deletedDays: result.processed.deletedDays.length, skipped: result.processed.skipped.length }, 'processed retention applied');
  }
  if (aggregatedAge > 0) {
    result.aggregated = await expireAggregated(ctx, aggregatedAge, now);
    ctx.log.info({ cutoffDay: result.aggregated.cutoffDay, deletedDays: result.aggregated.deletedDays.length, skipped: result.aggregated.skipped.length }, 'batch-view retention applied');
  }
  return result;
}
