/**
 * Raw is the master dataset, and raw retention removes it. A period whose raw
 * input is (partly) gone must never be recomputed from what is left: a late
 * event for a day retention removed would otherwise replace the day's exact
 * views with a one-event subset.
 */
import { lakePaths, type RawRetentionRecord, type RunManifest } from '../../common/lake';
import { getJson, type LakeObject } from '../../common/lake-io';
import type { CompactionManifest } from './compaction';
import { type JobContext } from './context';
import { RawInputGoneError } from './errors';

/**
 * Throws RawInputGoneError when `hour`'s raw input is not complete: its day has a
 * raw-retention record, or objects the published run read are missing now
 * (beyond those compaction merged into objects that are still there).
 */
export async function assertRawComplete(ctx: JobContext, hour: string, present: readonly LakeObject[]): Promise<void> {
  const s3 = ctx.s3;
  const bucket = ctx.bucket;
  const day = hour.slice(0, 10);
  const retention = await getJson<RawRetentionRecord>(s3, bucket, lakePaths.rawRetention(day));
  if (retention) {
    throw new RawInputGoneError(hour, `raw retention removed day ${day} at ${retention.removedAt} (older than ${retention.maxAgeDays} days)`);
  }
  const published = await getJson<RunManifest>(s3, bucket, lakePaths.manifest('hourly', hour));
  if (!published) return;
  const here = new Set(present.map((o) => o.key));
  let gone = published.inputs.map((i) => i.key).filter((k) => !here.has(k));
  if (gone.length === 0) return;
  const compaction = await getJson<CompactionManifest>(s3, bucket, lakePaths.compactionManifest(hour));
  const merged = new Set(
    (compaction?.compactions ?? []).filter((c) => c.outputs.every((o) => here.has(o))).flatMap((c) => c.inputs.map((i) => i.key)),
  );
  gone = gone.filter((k) => !merged.has(k));
  if (gone.length > 0) {
    throw new RawInputGoneError(hour, `${gone.length} raw object(s) its published run read are gone (first: ${gone[0]})`);
  }
}
