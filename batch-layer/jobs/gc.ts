/**
 * Garbage collection of batch outputs. Every run writes its tables under its own
 * keys and publishes by writing the period's manifest, so a period's folder can
 * hold objects of superseded runs and of runs that died before their manifest.
 *
 * An object the current manifest does not name may go only when no reader can
 * still want it: a reader that read the previous manifest just before the switch
 * fetches its objects right after, so they stay for `graceMs` after the manifest
 * that superseded them. A listing cannot tell when each unnamed object was
 * superseded, only that it happened no later than the current manifest's
 * publishedAt, so that is the clock. Objects younger than `graceMs` stay too: they
 * may belong to a run still on its way to its manifest.
 */
import { lakePaths, type PeriodKind, type RunManifest } from '../../common/lake';
import { deleteObjects, getJson, listObjects, type LakeObject } from '../../common/lake-io';
import { checkpoint, mapLimit, type JobContext } from './context';

/** `<zone>/<table>/dt=…/[hour=HH/]` of a batch output key, and the period it belongs to. */
const PERIOD_FOLDER = /^((?:processed|aggregated)\/[^/]+\/dt=(\d{4}-\d{2}-\d{2})\/(?:hour=(\d{2})\/)?)[^/]+$/;

export function periodFolderOf(key: string): { folder: string; kind: PeriodKind; period: string } | null {
  const m = PERIOD_FOLDER.exec(key);
  if (!m) return null;
  return m[3] === undefined ? { folder: m[1], kind: 'daily', period: m[2] } : { folder: m[1], kind: 'hourly', period: `${m[2]}T${m[3]}` };
}

export interface GcOptions {
  now?: number;
  graceMs?: number;
}

export interface GcResult {
  /** Period folders looked at. */
  folders: number;
  deleted: string[];
  /** Unnamed objects kept because their grace period has not passed. */
  waiting: number;
}

/**
 * The objects of `objects` (all under one period's folders) that may be deleted.
 * `keep` are the keys still named by a manifest a reader may hold; every other one was
 * superseded no later than `supersededBy` (epoch ms; null when no manifest ever named it).
 */
function collectable(objects: readonly LakeObject[], keep: ReadonlySet<string>, supersededBy: number | null, now: number, graceMs: number): { gone: string[]; waiting: number } {
  const gone: string[] = [];
  let waiting = 0;
  for (const o of objects) {
    if (keep.has(o.key)) continue;
    const quiet = (supersededBy === null || now - supersededBy >= graceMs) && now - o.lastModified.getTime() >= graceMs;
    if (quiet) gone.push(o.key);
    else waiting += 1;
  }
  return { gone, waiting };
}

function foldersOf(manifests: readonly (RunManifest | null)[]): Set<string> {
  const out = new Set<string>();
  for (const m of manifests) for (const key of Object.values(m?.outputs ?? {})) {
    const f = periodFolderOf(key);
    if (f) out.add(f.folder);
  }
  return out;
}

/**
 * Run by the publish step right after it switched the period to `current`. The run it
 * replaced (`previous`) was current a moment ago and keeps its grace; runs before it
 * were superseded no later than previous.publishedAt.
 */
export async function collectAfterPublish(ctx: JobContext, current: RunManifest, previous: RunManifest | null, opts: GcOptions = {}): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  const graceMs = opts.graceMs ?? ctx.cfg.batch.supersededGraceMs;
  const folders = foldersOf([current, previous]);
  const keep = new Set([...Object.values(current.outputs), ...Object.values(previous?.outputs ?? {})]);
  const supersededBy = previous ? Date.parse(previous.publishedAt) : null;
  const result: GcResult = { folders: folders.size, deleted: [], waiting: 0 };
  // One listing per table folder, in parallel: this runs after every publish.
  const listed = await mapLimit([...folders], ctx.cfg.batch.ioConcurrency, (folder) => listObjects(ctx.s3, ctx.bucket, folder));
  for (const objects of listed) {
    const { gone, waiting } = collectable(objects, keep, supersededBy, now, graceMs);
    result.waiting += waiting;
    result.deleted.push(...gone);
  }
  if (result.deleted.length > 0) await deleteObjects(ctx.s3, ctx.bucket, result.deleted);
  if (result.deleted.length > 0) ctx.log.info({ kind: current.kind, period: current.period, deleted: result.deleted.length }, 'superseded run objects removed');
  return result;
}

/**
 * Housekeeping over the whole lake (the nightly retention run): every period folder
 * holding an object its current manifest does not name. A folder with one object of a
 * published period is its current run and is not read further.
 */
export async function collectSupersededRuns(ctx: JobContext, opts: GcOptions = {}): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  const graceMs = opts.graceMs ?? ctx.cfg.batch.supersededGraceMs;
  const s3 = ctx.s3;
  const bucket = ctx.bucket;
  const byFolder = new Map<string, { kind: PeriodKind; period: string; objects: LakeObject[] }>();
  for (const zone of ['processed/', 'aggregated/']) {
    for (const o of await listObjects(s3, bucket, zone)) {
      const f = periodFolderOf(o.key);
      if (!f) continue;
      const entry = byFolder.get(f.folder) ?? { kind: f.kind, period: f.period, objects: [] };
      entry.objects.push(o);
      byFolder.set(f.folder, entry);
    }
  }
  const published = {
    hourly: new Set((await listObjects(s3, bucket, lakePaths.manifestPrefix('hourly'))).map((o) => o.key)),
    daily: new Set((await listObjects(s3, bucket, lakePaths.manifestPrefix('daily'))).map((o) => o.key)),
  };
  const manifests = new Map<string, RunManifest | null>();
  const result: GcResult = { folders: 0, deleted: [], waiting: 0 };
  for (const { kind, period, objects } of byFolder.values()) {
    const manifestKey = lakePaths.manifest(kind, period);
    if (objects.length < 2 && published[kind].has(manifestKey)) continue;
    result.folders += 1;
    if (!manifests.has(manifestKey)) manifests.set(manifestKey, published[kind].has(manifestKey) ? await getJson<RunManifest>(s3, bucket, manifestKey) : null);
    const current = manifests.get(manifestKey) ?? null;
    const { gone, waiting } = collectable(objects, new Set(Object.values(current?.outputs ?? {})), current ? Date.parse(current.publishedAt) : null, now, graceMs);
    result.waiting += waiting;
    if (gone.length > 0) await deleteObjects(s3, bucket, gone);
    result.deleted.push(...gone);
    checkpoint(ctx, { step: 'gc', period, deleted: result.deleted.length });
  }
  ctx.log.info({ folders: result.folders, deleted: result.deleted.length, waiting: result.waiting }, 'superseded batch outputs collected');
  return result;
}
