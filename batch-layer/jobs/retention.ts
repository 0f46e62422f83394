/**
 * Raw retention: remove raw days older than the configured age. A day is removed
 * only once its daily run is published and neither it nor any of its hours is
 * dirty — raw is the master dataset, and a day not yet folded into the batch
 * views would be lost for good. Each removed day gets a record under
 * `_manifests/retention/raw/` first, and its periods then refuse to recompute
 * (RawInputGoneError) instead of recomputing from what late data adds.
 */
import { lakePaths, type RawRetentionRecord } from '../../common/lake';
import { deleteObjects, listObjects, putJson } from '../lake-io';
import { DAY_MS, bucketOf, checkpoint, s3Of, type JobContext } from './context';
import { NonRetryableBatchError } from './errors';
import { listDirty, listPublished } from './watermark';

export interface RetentionOptions {
  rawMaxAgeDays?: number;
  now?: number;
}

export interface RetentionResult {
  /** Raw days before this one are eligible. */
  cutoffDay: string;
  deletedDays: string[];
  deletedObjects: number;
  skipped: { day: string; reason: string }[];
}

export async function applyRetention(ctx: JobContext, opts: RetentionOptions = {}): Promise<RetentionResult> {
  const maxAge = opts.rawMaxAgeDays ?? ctx.cfg.batch.rawMaxAgeDays;
  if (!Number.isInteger(maxAge) || maxAge < 1) throw new NonRetryableBatchError(`rawMaxAgeDays must be an integer >= 1, got ${maxAge}`);
  const now = opts.now ?? Date.now();
  const cutoffDay = new Date(Math.floor(now / DAY_MS) * DAY_MS - maxAge * DAY_MS).toISOString().slice(0, 10);
  const raw = await listObjects(s3Of(ctx), bucketOf(ctx), lakePaths.rawEventsPrefix);
  const byDay = new Map<string, string[]>();
  for (const o of raw) {
    const m = /dt=(\d{4}-\d{2}-\d{2})\//.exec(o.key);
    if (!m || m[1] >= cutoffDay) continue;
    byDay.set(m[1], [...(byDay.get(m[1]) ?? []), o.key]);
  }
  const published = new Set(await listPublished(ctx, 'daily'));
  const dirty = await listDirty(ctx);
  const result: RetentionResult = { cutoffDay, deletedDays: [], deletedObjects: 0, skipped: [] };
  for (const [day, keys] of [...byDay].sort(([a], [b]) => a.localeCompare(b))) {
    const dirtyHere = dirty.filter((d) => d.period.slice(0, 10) === day);
    if (!published.has(day)) result.skipped.push({ day, reason: 'daily run not published' });
    else if (dirtyHere.length > 0) result.skipped.push({ day, reason: `dirty: ${dirtyHere.map((d) => d.period).join(', ')}` });
    else {
      // Recorded before the delete: from here on the day's periods refuse to recompute (see raw-guard.ts).
      const record: RawRetentionRecord = { day, removedAt: new Date().toISOString(), objects: keys.length, rawMaxAgeDays: maxAge };
      await putJson(s3Of(ctx), bucketOf(ctx), lakePaths.rawRetention(day), record);
      await deleteObjects(s3Of(ctx), bucketOf(ctx), keys);
      result.deletedDays.push(day);
      result.deletedObjects += keys.length;
      checkpoint(ctx, { step: 'retention', day });
    }
  }
  ctx.log.info({ cutoffDay, deletedDays: result.deletedDays.length, deletedObjects: result.deletedObjects, skipped: result.skipped.length }, 'raw retention applied');
  return result;
}
