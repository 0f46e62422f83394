/**
 * Publishing a run: copy the staged outputs to their final keys, write the
 * manifest last (its existence is what "published" means), remove the staging
 * prefix, clear the dirty marker the run made obsolete, move the watermark.
 */
import { clearDirtyMarker, copyObject, deleteObjects, listObjects, putJson } from '../lake-io';
import { lakePaths, type PeriodKind, type QualityCheck, type RunManifest } from '../../common/lake';
import { bucketOf, checkpoint, mapLimit, s3Of, type JobContext } from './context';
import { QualityCheckError } from './errors';
import { computeWatermark } from './watermark';

export interface PublishInput {
  kind: PeriodKind;
  period: string;
  runId: string;
  startedAt: string;
  inputs: RunManifest['inputs'];
  /** table -> { staged key, final key } */
  outputs: Record<string, { staged: string; final: string }>;
  rowCounts: Record<string, number>;
  checks: QualityCheck[];
  duplicates?: RunManifest['duplicates'];
  shards?: number;
  activeUsersDigest?: string;
}

export function stagingPrefix(runId: string): string {
  return lakePaths.staging(runId, '');
}

export async function discardStaging(ctx: JobContext, runId: string): Promise<void> {
  const keys = (await listObjects(s3Of(ctx), bucketOf(ctx), stagingPrefix(runId))).map((o) => o.key);
  if (keys.length > 0) await deleteObjects(s3Of(ctx), bucketOf(ctx), keys);
}

export async function publish(ctx: JobContext, input: PublishInput): Promise<RunManifest> {
  const failed = input.checks.filter((c) => !c.ok);
  if (failed.length > 0) {
    ctx.log.error({ period: input.period, runId: input.runId, checks: failed }, 'data-quality checks failed; not publishing');
    await discardStaging(ctx, input.runId);
    throw new QualityCheckError(input.period, input.checks);
  }
  const tables = Object.entries(input.outputs);
  await mapLimit(tables, ctx.cfg.batch.ioConcurrency, async ([, o]) => {
    await copyObject(s3Of(ctx), bucketOf(ctx), o.staged, o.final);
    checkpoint(ctx, { step: 'publish', key: o.final });
  });
  const manifest: RunManifest = {
    kind: input.kind,
    period: input.period,
    runId: input.runId,
    startedAt: input.startedAt,
    publishedAt: new Date().toISOString(),
    inputs: input.inputs,
    outputs: Object.fromEntries(tables.map(([table, o]) => [table, o.final])),
    rowCounts: input.rowCounts,
    checks: input.checks,
    ...(input.duplicates ? { duplicates: input.duplicates } : {}),
    ...(input.shards !== undefined ? { shards: input.shards } : {}),
    ...(input.activeUsersDigest !== undefined ? { activeUsersDigest: input.activeUsersDigest } : {}),
  };
  await putJson(s3Of(ctx), bucketOf(ctx), lakePaths.manifest(input.kind, input.period), manifest);
  await discardStaging(ctx, input.runId);
  await clearDirty(ctx, input.kind, input.period, Date.parse(input.startedAt), input.runId);
  await computeWatermark(ctx);
  ctx.log.info({ kind: input.kind, period: input.period, runId: input.runId, rowCounts: input.rowCounts }, 'published');
  return manifest;
}

/**
 * A marker written after the run started stays: the run may not have seen that late data.
 * The clear is a conditional tombstone write, so a marker rewritten meanwhile is never lost.
 */
async function clearDirty(ctx: JobContext, kind: PeriodKind, period: string, startedAtMs: number, runId: string): Promise<void> {
  const { outcome, marker } = await clearDirtyMarker(s3Of(ctx), bucketOf(ctx), kind, period, startedAtMs, runId);
  if (outcome === 'cleared') ctx.log.info({ kind, period, markedAt: marker!.markedAt }, 'dirty marker cleared');
  else if (outcome === 'kept') ctx.log.warn({ kind, period, markedAt: marker!.markedAt, startedAt: startedAtMs }, 'late data arrived during the run; the period stays dirty');
}
