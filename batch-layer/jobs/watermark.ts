/**
 * The batch watermark and dirty markers. The watermark is recomputed from the
 * manifests after every publish: the end of the contiguous run of published,
 * clean periods that starts at the earliest published one. A dirty period
 * (late data) stops it, so serving never reads a stale batch view as exact.
 */
import { HOUR_MS, DAY_MS, bucketOf, s3Of, type JobContext } from './context';
import { getJson, listObjects, putJson } from '../lake-io';
import { dayStartMs, hourStartMs, lakePaths, type DirtyMarker, type PeriodKind, type Watermark } from '../../common/lake';

const MANIFEST_RE = {
  hourly: /dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\.json$/,
  daily: /dt=(\d{4}-\d{2}-\d{2})\.json$/,
} as const;

/** The period a manifest or dirty-marker key names, or null for anything else under the prefix. */
export function periodOfKey(kind: PeriodKind, key: string): string | null {
  const m = MANIFEST_RE[kind].exec(key);
  if (!m) return null;
  return kind === 'hourly' ? `${m[1]}T${m[2]}` : m[1];
}

export function manifestPrefix(kind: PeriodKind): string {
  return lakePaths.manifest(kind, kind === 'hourly' ? '2000-01-01T00' : '2000-01-01').replace(/dt=.*$/, '');
}

/** Periods with a published manifest, ascending. */
export async function listPublished(ctx: JobContext, kind: PeriodKind): Promise<string[]> {
  const objects = await listObjects(s3Of(ctx), bucketOf(ctx), manifestPrefix(kind));
  return objects
    .map((o) => periodOfKey(kind, o.key))
    .filter((p): p is string => p !== null)
    .sort();
}

/** Every dirty marker, hourly then daily, each ascending by period. */
export async function listDirty(ctx: JobContext): Promise<DirtyMarker[]> {
  const out: DirtyMarker[] = [];
  for (const kind of ['hourly', 'daily'] as const) {
    const objects = await listObjects(s3Of(ctx), bucketOf(ctx), lakePaths.dirtyPrefix(kind));
    const periods = objects
      .map((o) => periodOfKey(kind, o.key))
      .filter((p): p is string => p !== null)
      .sort();
    for (const period of periods) {
      const marker = await getJson<DirtyMarker>(s3Of(ctx), bucketOf(ctx), lakePaths.dirtyMarker(kind, period));
      if (marker) out.push(marker);
    }
  }
  return out;
}

function contiguousEnd(published: readonly string[], dirty: ReadonlySet<string>, startOf: (p: string) => number, size: number): number | null {
  if (published.length === 0) return null;
  const clean = new Set(published.filter((p) => !dirty.has(p)).map(startOf));
  let t = startOf(published[0]);
  let end: number | null = null;
  while (clean.has(t)) {
    t += size;
    end = t;
  }
  return end;
}

/** Recomputes and writes `_manifests/watermark.json`, keeping an operator's pin. */
export async function computeWatermark(ctx: JobContext): Promise<Watermark> {
  const dirty = await listDirty(ctx);
  const dirtyOf = (kind: PeriodKind) => new Set(dirty.filter((d) => d.kind === kind).map((d) => d.period));
  const hourly = await listPublished(ctx, 'hourly');
  const daily = await listPublished(ctx, 'daily');
  const previous = await getJson<Watermark>(s3Of(ctx), bucketOf(ctx), lakePaths.watermark);
  const watermark: Watermark = {
    hourlyEnd: contiguousEnd(hourly, dirtyOf('hourly'), hourStartMs, HOUR_MS),
    dailyEnd: contiguousEnd(daily, dirtyOf('daily'), dayStartMs, DAY_MS),
    pinnedEnd: previous?.pinnedEnd ?? null,
    updatedAt: new Date().toISOString(),
  };
  await putJson(s3Of(ctx), bucketOf(ctx), lakePaths.watermark, watermark);
  ctx.log.info({ hourlyEnd: watermark.hourlyEnd, dailyEnd: watermark.dailyEnd }, 'watermark updated');
  return watermark;
}
