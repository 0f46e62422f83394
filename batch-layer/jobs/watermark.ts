/**
 * The batch watermark and dirty markers. The watermark is recomputed from the
 * manifests after every publish: the end of the latest contiguous run of
 * published, clean periods (the run that ends at the newest clean one), so one
 * ancient period (a device clock in 2015) or one dirty period never drags it
 * back. It is written with If-Match on the version read (If-None-Match for the
 * first), retried on a conflict, so concurrent publishes never lose each
 * other's update. The operator's pin is a separate object (`_manifests/pin.json`)
 * that only the pin endpoint writes.
 */
import { HOUR_MS, DAY_MS, type JobContext } from './context';
import { getJson, getJsonWithEtag, isOpenMarker, listObjects, putJsonIf } from '../../common/lake-io';
import { dayStartMs, hourStartMs, lakePaths, latestCleanRun, type DirtyMarker, type PeriodKind, type Pin, type Watermark } from '../../common/lake';

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

/** Periods with a published manifest, ascending. */
export async function listPublished(ctx: JobContext, kind: PeriodKind): Promise<string[]> {
  const objects = await listObjects(ctx.s3, ctx.bucket, lakePaths.manifestPrefix(kind));
  return objects
    .map((o) => periodOfKey(kind, o.key))
    .filter((p): p is string => p !== null)
    .sort();
}

/**
 * Marker objects this process has read, by bucket and key, with the ETag read. Cleared
 * markers stay as tombstones, so a listing grows with every period ever dirtied: only
 * objects whose ETag changed since are read again.
 */
const markerCache = new Map<string, { etag: string; marker: DirtyMarker | null }>();

/** Every open dirty marker (tombstones of cleared ones left out), hourly then daily, each ascending by period. */
export async function listDirty(ctx: JobContext): Promise<DirtyMarker[]> {
  const out: DirtyMarker[] = [];
  const bucket = ctx.bucket;
  for (const kind of ['hourly', 'daily'] as const) {
    const objects = (await listObjects(ctx.s3, bucket, lakePaths.dirtyPrefix(kind)))
      .map((o) => ({ ...o, period: periodOfKey(kind, o.key) }))
      .filter((o): o is typeof o & { period: string } => o.period !== null)
      .sort((a, b) => a.period.localeCompare(b.period));
    for (const o of objects) {
      const id = `${bucket}/${o.key}`;
      let cached = markerCache.get(id);
      if (cached?.etag !== o.etag) {
        const got = await getJsonWithEtag<DirtyMarker>(ctx.s3, bucket, o.key);
        cached = { etag: got?.etag ?? o.etag, marker: got?.value ?? null };
        // Cache only what matches the listing: a marker rewritten in between is read again next time.
        if (got && got.etag === o.etag) markerCache.set(id, cached);
        else markerCache.delete(id);
      }
      if (isOpenMarker(cached.marker)) out.push(cached.marker);
    }
  }
  return out;
}

/** The operator's pin, or null. A pin written by an older version inside watermark.json is still honoured. */
export async function readPin(ctx: JobContext): Promise<number | null> {
  const pin = await getJson<Pin>(ctx.s3, ctx.bucket, lakePaths.pin);
  if (pin) return pin.pinnedEnd;
  return (await getJson<Watermark>(ctx.s3, ctx.bucket, lakePaths.watermark))?.pinnedEnd ?? null;
}

function runOf(published: readonly string[], dirty: ReadonlySet<string>, startOf: (p: string) => number, size: number) {
  return latestCleanRun(
    published.map(startOf),
    new Set([...dirty].map(startOf)),
    size,
  );
}

/** Recomputes and writes `_manifests/watermark.json` (conditionally; see the module comment). */
export async function computeWatermark(ctx: JobContext): Promise<Watermark> {
  const s3 = ctx.s3;
  const bucket = ctx.bucket;
  for (let attempt = 0; ; attempt++) {
    // Read first: a listing made after this read includes everything the version we replace was computed from.
    const previous = await getJsonWithEtag<Watermark>(s3, bucket, lakePaths.watermark);
    const dirty = await listDirty(ctx);
    const dirtyOf = (kind: PeriodKind) => new Set(dirty.filter((d) => d.kind === kind).map((d) => d.period));
    const hourly = runOf(await listPublished(ctx, 'hourly'), dirtyOf('hourly'), hourStartMs, HOUR_MS);
    const daily = runOf(await listPublished(ctx, 'daily'), dirtyOf('daily'), dayStartMs, DAY_MS);
    const legacyPin = previous?.value.pinnedEnd ?? null;
    if (legacyPin !== null && !(await getJson<Pin>(s3, bucket, lakePaths.pin))) {
      // Carry a pin from the old single-object layout over to its own object before dropping it here.
      await putJsonIf(s3, bucket, lakePaths.pin, { pinnedEnd: legacyPin, updatedAt: new Date().toISOString(), keyId: 'migrated', requestId: 'watermark.json' } satisfies Pin, { ifNoneMatch: '*' });
    }
    const watermark: Watermark = {
      hourlyEnd: hourly.end,
      hourlyStart: hourly.start,
      dailyEnd: daily.end,
      dailyStart: daily.start,
      updatedAt: new Date().toISOString(),
    };
    const same = (['hourlyEnd', 'hourlyStart', 'dailyEnd', 'dailyStart'] as const).every((k) => (previous?.value[k] ?? null) === watermark[k]);
    // Unchanged (and no legacy pin left to drop): the version we read already says this; writing would only contend.
    const unchanged = previous !== null && same && legacyPin === null;
    const written = unchanged ? previous.etag : await putJsonIf(s3, bucket, lakePaths.watermark, watermark, previous ? { ifMatch: previous.etag } : { ifNoneMatch: '*' });
    if (written !== null) {
      const pinnedEnd = await readPin(ctx);
      ctx.log.info({ hourlyEnd: watermark.hourlyEnd, dailyEnd: watermark.dailyEnd, pinnedEnd, attempt, unchanged }, 'watermark updated');
      return { ...(unchanged ? { ...watermark, updatedAt: previous.value.updatedAt } : watermark), pinnedEnd };
    }
    if (attempt >= 50) throw new Error('watermark.json kept changing under 50 attempts to update it');
    ctx.log.debug({ attempt }, 'watermark changed while it was computed; recomputing');
    // Randomised backoff, so publishes that collided do not collide again in lockstep.
    await new Promise((r) => setTimeout(r, Math.random() * Math.min(1000, 20 * 2 ** Math.min(attempt, 6))));
  }
}
