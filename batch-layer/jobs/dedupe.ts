/**
 * De-duplication across hours: an event_id counts once, in the hour of the copy
 * received first, whatever timestamps its copies carry, when their hours lie within
 * the dedupe horizon of each other (the lateness horizon, BATCH_LATENESS_HORIZON_MS).
 *
 * Every hourly run publishes an index of its ids (processed/event_ids: where each
 * id's first copy in the hour was received, and whether the hour counted it) and
 * reads the indexes of the published hours within the horizon before it computes
 * processed/events. Runs of two hours can still miss each other (both ran before
 * either published, or one of them is not published yet): after its manifest is
 * written, a run reads the indexes published since it looked and, for an id both
 * hours counted, marks dirty the hour whose copy was received later, so
 * reconciliation re-runs it and it drops the id. The later of two publishes always
 * sees the earlier one (S3 reads after a write are consistent), so no conflict goes
 * unnoticed; until the re-run publishes, that hour is `recomputing`, not exact.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { dayId, hourStartMs, type RunManifest } from '../../common/lake';
import { getJson, listObjects, putDirtyMarker } from '../../common/lake-io';
import { DAY_MS, mapLimit, type JobContext } from './context';
import { sqlList, sqlString, type Duck } from './duck';
import { stage } from './stage';
import { periodOfKey } from './watermark';

/** A published hour's index, as named by its manifest. */
export interface NeighbourIndex {
  hour: string;
  key: string;
  /** ETag of the manifest that named it: a re-publish since shows as another ETag. */
  manifestEtag: string;
}

const INDEX_COLUMNS = {
  event_id: 'VARCHAR',
  hour_id: 'VARCHAR',
  received_at: 'BIGINT',
  kafka_partition: 'INTEGER',
  kafka_offset: 'BIGINT',
  payload_digest: 'UBIGINT',
  counted: 'BOOLEAN',
} as const;

/** Manifest key -> (its ETag, the index key it names): manifests are read again only when they change. */
const indexKeyCache = new Map<string, { etag: string; key: string | null }>();

/**
 * The indexes of the published hours within the dedupe horizon of `hour` (itself left out).
 * Hours published before the index existed name none and are not consulted until re-run.
 */
export async function neighbourIndexes(ctx: JobContext, hour: string): Promise<NeighbourIndex[]> {
  const s3 = ctx.s3;
  const bucket = ctx.bucket;
  const start = hourStartMs(hour);
  const horizon = ctx.cfg.batch.latenessHorizonMs;
  const days: string[] = [];
  for (let t = Math.floor((start - horizon) / DAY_MS) * DAY_MS; t <= start + horizon; t += DAY_MS) days.push(dayId(t));
  const listed = (await mapLimit(days, ctx.cfg.batch.ioConcurrency, (d) => listObjects(s3, bucket, `_manifests/hourly/dt=${d}/`))).flat();
  const candidates = listed
    .map((o) => ({ ...o, period: periodOfKey('hourly', o.key) }))
    .filter((o): o is typeof o & { period: string } => o.period !== null && o.period !== hour && Math.abs(hourStartMs(o.period) - start) <= horizon);
  const found = await mapLimit(candidates, ctx.cfg.batch.ioConcurrency, async (o) => {
    const id = `${bucket}/${o.key}`;
    let cached = indexKeyCache.get(id);
    if (cached?.etag !== o.etag) {
      const m = await getJson<RunManifest>(s3, bucket, o.key);
      cached = { etag: o.etag, key: m?.outputs.event_ids ?? null };
      indexKeyCache.set(id, cached);
    }
    return cached.key ? { hour: o.period, key: cached.key, manifestEtag: o.etag } : null;
  });
  return found.filter((n): n is NeighbourIndex => n !== null);
}

/**
 * Indexes already loaded into one DuckDB, for runs of several hours in it (runHours):
 * each published index is fetched and read once, not once per hour that neighbours it.
 * An index key names one run's object, never rewritten, so a loaded key stays valid.
 */
export class IndexCache {
  private readonly loaded = new Set<string>();
  static readonly TABLE = '__loaded_indexes';

  async declare(ctx: JobContext, duck: Duck, name: string, indexes: readonly NeighbourIndex[], dir: string): Promise<void> {
    const columns = Object.entries(INDEX_COLUMNS);
    if (this.loaded.size === 0) {
      await duck.run(`CREATE TABLE IF NOT EXISTS ${IndexCache.TABLE} (__key VARCHAR, ${columns.map(([c, t]) => `${c} ${t}`).join(', ')})`);
    }
    const fresh = [...new Set(indexes.map((n) => n.key))].filter((k) => !this.loaded.has(k));
    const staged = await stage(ctx, fresh.map((key) => ({ key, etag: '', size: 0 })), path.join(dir, 'indexes'), 'stage');
    if (staged.length > 0) {
      const files = staged.map((s) => `(${sqlString(s.file)}, ${sqlString(s.key)})`).join(', ');
      await duck.run(
        `INSERT INTO ${IndexCache.TABLE} SELECT k.key, ${columns.map(([c, t]) => `CAST(r.${c} AS ${t})`).join(', ')}
         FROM read_parquet(${sqlList(staged.map((s) => s.file))}, filename = true) r JOIN (VALUES ${files}) k(file, key) ON r.filename = k.file`,
      );
      for (const s of staged) {
        this.loaded.add(s.key);
        await fsp.rm(s.file, { force: true });
      }
    }
    const keys = indexes.map((n) => n.key);
    await duck.run(
      `CREATE OR REPLACE VIEW ${name} AS SELECT ${columns.map(([c]) => c).join(', ')} FROM ${IndexCache.TABLE}
       WHERE __key IN (SELECT unnest(${keys.length > 0 ? sqlList(keys) : '[]::VARCHAR[]'}))`,
    );
  }
}

/**
 * Stages the indexes and declares them as the view `name` (an empty relation when there are none);
 * through `cache` when several hours run in this DuckDB.
 */
export async function declareIndexes(ctx: JobContext, duck: Duck, name: string, indexes: readonly NeighbourIndex[], dir: string, cache?: IndexCache): Promise<void> {
  if (cache) return cache.declare(ctx, duck, name, indexes, dir);
  const staged = await stage(ctx, indexes.map((n) => ({ key: n.key, etag: '', size: 0 })), path.join(dir, name), 'stage');
  const columns = Object.entries(INDEX_COLUMNS);
  await duck.run(
    `CREATE OR REPLACE VIEW ${name} AS ${
      staged.length === 0
        ? `SELECT ${columns.map(([c, t]) => `CAST(NULL AS ${t}) AS ${c}`).join(', ')} WHERE false`
        : `SELECT ${columns.map(([c, t]) => `CAST(${c} AS ${t}) AS ${c}`).join(', ')} FROM read_parquet(${sqlList(staged.map((s) => s.file))})`
    }`,
  );
}

/**
 * After the publish: the hours that counted an id this run counted too. The indexes read
 * before computing are checked again (this run may have beaten a copy they counted), and
 * so are those published since (they did not see this run, nor it them).
 */
export async function markDedupeConflicts(ctx: JobContext, duck: Duck, hour: string, before: readonly NeighbourIndex[], dir: string, cache?: IndexCache): Promise<string[]> {
  const seen = new Set(before.map((n) => `${n.hour}|${n.manifestEtag}`));
  const since = (await neighbourIndexes(ctx, hour)).filter((n) => !seen.has(`${n.hour}|${n.manifestEtag}`));
  await declareIndexes(ctx, duck, 'late_neighbour_ids', since, dir, cache);
  // An hour re-published since is judged by its new index only: its old one may count what it no longer does.
  const republished = [...new Set(since.map((n) => n.hour))];
  await duck.run(
    `CREATE OR REPLACE VIEW conflict_ids AS
     SELECT * FROM neighbour_ids WHERE hour_id NOT IN (SELECT unnest(${republished.length > 0 ? sqlList(republished) : '[]::VARCHAR[]'}))
     UNION ALL SELECT * FROM late_neighbour_ids`,
  );
  const rows = await duck.select('dedupe_conflicts');
  const wrong = [...new Set(rows.map((r) => (r.ours_later ? hour : String(r.hour_id))))].sort();
  const markedAt = Date.now();
  for (const h of wrong) {
    const reason = h === hour ? `another hour received first an event_id this run counted` : `${hour} received first an event_id this hour counted`;
    await putDirtyMarker(ctx.s3, ctx.bucket, { kind: 'hourly', period: h, markedAt, reason });
    await putDirtyMarker(ctx.s3, ctx.bucket, { kind: 'daily', period: h.slice(0, 10), markedAt, reason: `hour ${h}: ${reason}` });
  }
  if (wrong.length > 0) ctx.log.warn({ hour, dirty: wrong, ids: rows.length }, 'an event_id was counted in two hours: the later-received one is marked dirty');
  return wrong;
}
