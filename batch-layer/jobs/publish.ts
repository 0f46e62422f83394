/**
 * Publishing a run: upload its outputs under keys of their own (`part-<runId>`),
 * then write the manifest that names them: that write is the commit point, the
 * one moment every reader (serving, the daily job, `npm run lake`) switches from
 * the previous run to this one. A crash before it leaves the previous run current
 * and whole; the unfinished run's objects are never named and are collected
 * later. Then: remove the staging prefix, clear the dirty marker the run made
 * obsolete, move the watermark, and collect runs superseded long enough ago.
 */
import { clearDirtyMarker, deleteObjects, getJson, listObjects, putJson, uploadFile } from '../../common/lake-io';
import { lakePaths, type PeriodKind, type QualityCheck, type RunManifest, type Zone } from '../../common/lake';
import { checkpoint, mapLimit, timed, type JobContext } from './context';
import { QualityCheckError } from './errors';
import { collectAfterPublish } from './gc';
import { computeWatermark } from './watermark';

export interface PublishInput {
  kind: PeriodKind;
  period: string;
  runId: string;
  startedAt: string;
  inputs: RunManifest['inputs'];
  /** table -> the local Parquet file of its output, and its zone */
  outputs: Record<string, { zone: Zone; file: string }>;
  rowCounts: Record<string, number>;
  checks: QualityCheck[];
  duplicates?: RunManifest['duplicates'];
  shards?: number;
  activeUsersDigest?: string;
  /** The caller computes the watermark once after several publishes (runHours). */
  deferWatermark?: boolean;
}

export function stagingPrefix(runId: string): string {
  return lakePaths.staging(runId, '');
}

export async function discardStaging(ctx: JobContext, runId: string): Promise<void> {
  const keys = (await listObjects(ctx.s3, ctx.bucket, stagingPrefix(runId))).map((o) => o.key);
  if (keys.length > 0) await deleteObjects(ctx.s3, ctx.bucket, keys);
}

export async function publish(ctx: JobContext, input: PublishInput): Promise<RunManifest> {
  const failed = input.checks.filter((c) => !c.ok);
  if (failed.length > 0) {
    ctx.log.error({ period: input.period, runId: input.runId, checks: failed }, 'data-quality checks failed; not publishing');
    await discardStaging(ctx, input.runId);
    throw new QualityCheckError(input.period, input.checks);
  }
  const manifestKey = lakePaths.manifest(input.kind, input.period);
  const previous = await timed(ctx, 'publish.previous', () => getJson<RunManifest>(ctx.s3, ctx.bucket, manifestKey));
  // A retry of a run that already published (it failed after its manifest) must not
  // rewrite the objects that manifest names while readers may be fetching them.
  const outputId = previous?.runId === input.runId ? `${input.runId}.${Date.now()}` : input.runId;
  const tables = Object.entries(input.outputs).map(([table, o]) => ({ table, file: o.file, key: lakePaths.table(o.zone, table, input.period, outputId) }));
  await timed(ctx, 'publish.upload', () =>
    mapLimit(tables, ctx.cfg.batch.ioConcurrency, async (t) => {
      await uploadFile(ctx.s3, ctx.bucket, t.key, t.file);
      checkpoint(ctx, { step: 'publish', key: t.key });
    }),
  );
  const manifest: RunManifest = {
    kind: input.kind,
    period: input.period,
    runId: input.runId,
    startedAt: input.startedAt,
    publishedAt: new Date().toISOString(),
    inputs: input.inputs,
    outputs: Object.fromEntries(tables.map((t) => [t.table, t.key])),
    rowCounts: input.rowCounts,
    checks: input.checks,
    ...(input.duplicates ? { duplicates: input.duplicates } : {}),
    ...(input.shards !== undefined ? { shards: input.shards } : {}),
    ...(input.activeUsersDigest !== undefined ? { activeUsersDigest: input.activeUsersDigest } : {}),
  };
  await timed(ctx, 'publish.manifest', () => putJson(ctx.s3, ctx.bucket, manifestKey, manifest));
  await timed(ctx, 'publish.staging', () => discardStaging(ctx, input.runId));
  await timed(ctx, 'publish.dirty', () => clearDirty(ctx, input.kind, input.period, Date.parse(input.startedAt), input.runId));
  if (!input.deferWatermark) await timed(ctx, 'publish.watermark', () => computeWatermark(ctx));
  // Published already: a failed clean-up only leaves objects for the nightly collection.
  await timed(ctx, 'publish.gc', () => collectAfterPublish(ctx, manifest, previous)).catch((err: unknown) =>
    ctx.log.warn({ err: (err as Error).message, period: input.period }, 'could not collect superseded runs; the nightly collection will'),
  );
  ctx.log.info({ kind: input.kind, period: input.period, runId: input.runId, rowCounts: input.rowCounts }, 'published');
  return manifest;
}

/**
 * A marker written after the run started stays: the run may not have seen that late data.
 * The clear is a conditional tombstone write, so a marker rewritten meanwhile is never lost.
 */
async function clearDirty(ctx: JobContext, kind: PeriodKind, period: string, startedAtMs: number, runId: string): Promise<void> {
  const { outcome, marker } = await clearDirtyMarker(ctx.s3, ctx.bucket, kind, period, startedAtMs, runId);
  if (outcome === 'cleared') ctx.log.info({ kind, period, markedAt: marker!.markedAt }, 'dirty marker cleared');
  else if (outcome === 'kept') ctx.log.warn({ kind, period, markedAt: marker!.markedAt, startedAt: startedAtMs }, 'late data arrived during the run; the period stays dirty');
}
