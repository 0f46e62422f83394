/**
 * The batch views, served from an embedded DuckDB. DuckDB's httpfs cannot be
 * downloaded here, so published objects are downloaded through the S3 SDK and
 * loaded into in-memory tables (one per batch view, `_period` column added).
 *
 * Only periods whose manifest exists are loaded (publishing = manifest written
 * last), only the objects the manifest names are read (each run writes its own
 * keys, so they are one whole run even while a re-run is publishing beside them;
 * a superseded run's objects outlive its manifest by BATCH_SUPERSEDED_GRACE_MS,
 * long enough for a sync that read it to finish), and one sync applies all its
 * changes in one transaction, so a query sees either the previous state or the
 * new one, never half a run.
 *
 * What is exact is decided per period, not by one global run: a loaded period
 * is exact unless it has an open dirty marker (then its buckets say
 * `recomputing`), an unpublished period is never exact, and W is the end of the
 * newest loaded period (capped by the operator's pin, `_manifests/pin.json`).
 * Dirty markers are polled on their own short interval (cheap: a listing, and a
 * read only for a marker whose ETag changed), so late data takes its period out
 * of the exact view within seconds, without waiting for a re-run.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api';
import type { Redis } from 'ioredis';
import { getJson, isOpenMarker, listObjects, putJson, putJsonIf, stageObjects } from '../common/lake-io';
import type { Config } from '../common/config';
import { dayStartMs, hourStartMs, lakePaths, lakeTables, type DirtyMarker, type PeriodKind, type Pin, type PinAudit, type RunManifest, type Watermark } from '../common/lake';
import type { Logger } from '../common/log';
import { speedKeys } from '../common/speed-keys';
import type { PeriodState, WatermarkView } from './merge';

const servedOf = (kind: PeriodKind): string[] => lakeTables(kind).filter((t) => t.served).map((t) => t.table);
/** The batch views the API serves (the catalog's `served` tables), by the period kind that publishes them. */
export const SERVED_TABLES: Record<PeriodKind, readonly string[]> = { hourly: servedOf('hourly'), daily: servedOf('daily') };

const MANIFEST_KEY = {
  hourly: /^_manifests\/hourly\/dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\.json$/,
  daily: /^_manifests\/daily\/dt=(\d{4}-\d{2}-\d{2})\.json$/,
} as const;
const DIRTY_KEY = {
  hourly: /^_manifests\/dirty\/hourly\/dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\.json$/,
  daily: /^_manifests\/dirty\/daily\/dt=(\d{4}-\d{2}-\d{2})\.json$/,
} as const;

/** Who changed the pin: written to the audit object next to it. */
export interface PinAuditInput {
  keyId: string;
  requestId: string;
}

const PERIOD_MS: Record<PeriodKind, number> = { hourly: 3_600_000, daily: 86_400_000 };
const startOf = (kind: PeriodKind, p: string): number => (kind === 'hourly' ? hourStartMs(p) : dayStartMs(p));

export type Row = Record<string, string | number | boolean | null>;

interface Loaded {
  etag: string;
  runId: string;
}

export interface SyncReport {
  loaded: number;
  removed: number;
  version: number;
}

function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

function plain(v: unknown): string | number | boolean | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  return String(v);
}

export class BatchStore {
  /** Bumped by every sync that changed what queries see; cache keys include it. */
  version = 0;
  lakeWatermark: Watermark | null = null;
  syncedAt: number | null = null;
  lastError: string | null = null;
  private loaded: Record<PeriodKind, Map<string, Loaded>> = { hourly: new Map(), daily: new Map() };
  /** Dirty-marker objects by key: their ETag and whether the marker is open (not a cleared tombstone). */
  private markers = new Map<string, { etag: string; open: boolean; kind: PeriodKind; period: string }>();
  private dirty: Record<PeriodKind, Set<number>> = { hourly: new Set(), daily: new Set() };
  private dirtyTimer: NodeJS.Timeout | null = null;
  private polling: Promise<boolean> | null = null;
  private view: { version: number; value: WatermarkView } | null = null;
  private tables = new Set<string>();
  private readers: DuckDBConnection[] = [];
  private idle: DuckDBConnection[] = [];
  private waiting: Array<(c: DuckDBConnection) => void> = [];
  private syncing: Promise<SyncReport> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private sub: Redis | null = null;

  private constructor(
    private readonly cfg: Config,
    private readonly s3: S3Client,
    private readonly log: Logger,
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
  ) {}

  static async open(cfg: Config, s3: S3Client, log: Logger, opts: { readers?: number } = {}): Promise<BatchStore> {
    const instance = await DuckDBInstance.create(':memory:', { threads: String(cfg.serving.duckdbThreads) });
    const store = new BatchStore(cfg, s3, log, instance, await instance.connect());
    for (let i = 0; i < (opts.readers ?? 2); i++) {
      const c = await instance.connect();
      store.readers.push(c);
      store.idle.push(c);
    }
    return store;
  }

  /** Periodic poll plus the batch layer's pub/sub notice on `<prefix>watermark`. */
  async start(subscriber?: Redis): Promise<void> {
    await this.sync().catch(() => undefined);
    this.timer = setInterval(() => void this.sync().catch(() => undefined), this.cfg.serving.syncIntervalMs);
    this.timer.unref();
    this.dirtyTimer = setInterval(() => void this.pollDirty().catch(() => undefined), this.cfg.batch.dirtyPollMs);
    this.dirtyTimer.unref();
    if (subscriber) {
      this.sub = subscriber;
      const channel = speedKeys(this.cfg).watermarkChannel();
      subscriber.on('message', (ch: string) => {
        if (ch === channel) void this.sync().catch(() => undefined);
      });
      await subscriber.subscribe(channel);
    }
  }

  has(table: string): boolean {
    return this.tables.has(table);
  }

  loadedPeriods(kind: PeriodKind): string[] {
    return [...this.loaded[kind].keys()].sort();
  }

  /** Periods with an open dirty marker, ascending. */
  dirtyPeriods(kind: PeriodKind): string[] {
    return [...this.markers.values()].filter((m) => m.open && m.kind === kind).map((m) => m.period).sort();
  }

  /**
   * The watermark as the merge applies it, per period kind: [earliest loaded, end of
   * the newest loaded period), and the state of each period in it (loaded and
   * clean = exact, loaded and dirty = recomputing, not loaded = missing); plus the pin.
   */
  watermark(): WatermarkView {
    // Every change to what is loaded, dirty or pinned bumps the version (synchronously with the change).
    if (this.view?.version === this.version) return this.view.value;
    const view = (kind: PeriodKind) => {
      const starts = [...this.loaded[kind].keys()].map((p) => startOf(kind, p));
      if (starts.length === 0) return { start: null, end: null };
      const loaded = new Set(starts);
      const dirty = new Set(this.dirty[kind]);
      const stateOf = (periodStart: number): PeriodState => (!loaded.has(periodStart) ? 'missing' : dirty.has(periodStart) ? 'recomputing' : 'exact');
      const first = starts.reduce((a, b) => Math.min(a, b));
      const last = starts.reduce((a, b) => Math.max(a, b));
      return { start: first, end: last + PERIOD_MS[kind], periodMs: PERIOD_MS[kind], stateOf };
    };
    const value: WatermarkView = {
      hourly: view('hourly'),
      daily: view('daily'),
      pinnedEnd: this.lakeWatermark?.pinnedEnd ?? null,
    };
    this.view = { version: this.version, value };
    return value;
  }

  /**
   * The start of the oldest period in [from, W) that is not exact (unpublished, or dirty),
   * or null. W no longer stops at such a period, so this is what a batch-lag alert must
   * watch: its buckets fall back to the speed layer, and to `none` once speed expires them.
   */
  firstNotExact(kind: PeriodKind, from: number): number | null {
    const w = this.watermark()[kind];
    if (w.start === null || w.end === null || !w.stateOf || !w.periodMs) return null;
    const first = Math.max(Math.floor(from / w.periodMs) * w.periodMs, w.start);
    for (let t = first; t < w.end; t += w.periodMs) if (w.stateOf(t) !== 'exact') return t;
    return null;
  }

  /**
   * Lists the dirty markers and reads those whose ETag changed. Returns whether the
   * set of open markers changed (then queries see a new version right away).
   */
  pollDirty(): Promise<boolean> {
    this.polling ??= (async () => {
      try {
        const bucket = this.cfg.s3.bucket;
        const seen = new Set<string>();
        let changed = false;
        for (const kind of ['hourly', 'daily'] as const) {
          for (const o of await listObjects(this.s3, bucket, lakePaths.dirtyPrefix(kind))) {
            const m = DIRTY_KEY[kind].exec(o.key);
            if (!m) continue;
            seen.add(o.key);
            if (this.markers.get(o.key)?.etag === o.etag) continue;
            const marker = await getJson<DirtyMarker>(this.s3, bucket, o.key);
            const open = isOpenMarker(marker);
            const period = kind === 'hourly' ? `${m[1]}T${m[2]}` : m[1];
            if ((this.markers.get(o.key)?.open ?? false) !== open) changed = true;
            this.markers.set(o.key, { etag: o.etag, open, kind, period });
          }
        }
        for (const [key, m] of this.markers) {
          if (seen.has(key)) continue;
          if (m.open) changed = true;
          this.markers.delete(key);
        }
        if (changed) {
          for (const kind of ['hourly', 'daily'] as const) {
            this.dirty[kind] = new Set(this.dirtyPeriods(kind).map((p) => startOf(kind, p)));
          }
          this.version += 1;
          this.log.info({ hourly: this.dirty.hourly.size, daily: this.dirty.daily.size, version: this.version }, 'dirty periods changed');
        }
        return changed;
      } finally {
        this.polling = null;
      }
    })();
    return this.polling;
  }

  /** Runs one sync at a time; a request during a sync runs one more right after it. */
  sync(): Promise<SyncReport> {
    if (this.syncing) {
      this.again = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        let report: SyncReport;
        do {
          this.again = false;
          report = await this.syncOnce();
        } while (this.again);
        this.lastError = null;
        return report;
      } catch (err) {
        this.lastError = (err as Error).message;
        this.log.warn({ err: this.lastError }, 'batch sync failed; serving the previous state');
        throw err;
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  private async syncOnce(): Promise<SyncReport> {
    const bucket = this.cfg.s3.bucket;
    // The lake's computed watermark is shown to operators; what is exact is decided per period below.
    const computed = await getJson<Watermark>(this.s3, bucket, lakePaths.watermark);
    const pin = await getJson<Pin>(this.s3, bucket, lakePaths.pin);
    const lakeWatermark: Watermark | null =
      computed || pin
        ? {
            hourlyEnd: computed?.hourlyEnd ?? null,
            hourlyStart: computed?.hourlyStart ?? null,
            dailyEnd: computed?.dailyEnd ?? null,
            dailyStart: computed?.dailyStart ?? null,
            pinnedEnd: pin ? pin.pinnedEnd : (computed?.pinnedEnd ?? null),
            updatedAt: computed?.updatedAt ?? pin!.updatedAt,
          }
        : null;
    await this.pollDirty();
    const changes: Array<{ kind: PeriodKind; period: string; manifestEtag: string; manifest: RunManifest }> = [];
    const removals: Array<{ kind: PeriodKind; period: string }> = [];
    // Days whose batch views retention removed: their manifests stay (history), their views are gone.
    const expired = new Set(
      (await listObjects(this.s3, bucket, lakePaths.aggregatedRetentionPrefix)).map((o) => /dt=(\d{4}-\d{2}-\d{2})\.json$/.exec(o.key)?.[1]).filter((d): d is string => !!d),
    );
    for (const kind of ['hourly', 'daily'] as const) {
      const listed = new Map<string, string>();
      for (const o of await listObjects(this.s3, bucket, lakePaths.manifestPrefix(kind))) {
        const m = MANIFEST_KEY[kind].exec(o.key);
        if (m && !expired.has(m[1])) listed.set(kind === 'hourly' ? `${m[1]}T${m[2]}` : m[1], o.etag);
      }
      for (const [period, etag] of listed) {
        if (this.loaded[kind].get(period)?.etag === etag) continue;
        const manifest = await getJson<RunManifest>(this.s3, bucket, lakePaths.manifest(kind, period));
        if (manifest) changes.push({ kind, period, manifestEtag: etag, manifest });
      }
      for (const period of this.loaded[kind].keys()) if (!listed.has(period)) removals.push({ kind, period });
    }

    const dir = path.join(this.cfg.serving.dataDir, `${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const loads: Array<{ kind: PeriodKind; period: string; table: string; file: string }> = [];
      const keys: string[] = [];
      for (const c of changes) {
        for (const table of SERVED_TABLES[c.kind]) {
          const key = c.manifest.outputs[table];
          if (!key) continue;
          keys.push(key);
          loads.push({ kind: c.kind, period: c.period, table, file: '' });
        }
      }
      const files = await stageObjects(this.s3, bucket, keys, dir, { concurrency: 4 });
      files.forEach((f, i) => (loads[i].file = f));

      if (loads.length > 0 || removals.length > 0) {
        const created = new Set<string>();
        await this.writer.run('BEGIN TRANSACTION');
        try {
          for (const r of removals) {
            for (const table of SERVED_TABLES[r.kind]) {
              if (this.tables.has(table)) await this.writer.run(`DELETE FROM ${table} WHERE _period = $1`, [r.period]);
            }
          }
          for (const c of changes) {
            // A re-published period replaces every table of the period, including one the new run no longer writes.
            for (const table of SERVED_TABLES[c.kind]) {
              if (this.tables.has(table)) await this.writer.run(`DELETE FROM ${table} WHERE _period = $1`, [c.period]);
            }
          }
          for (const l of loads) {
            const source = `SELECT *, ${sqlString(l.period)}::VARCHAR AS _period FROM read_parquet(${sqlString(l.file)})`;
            if (!this.tables.has(l.table)) {
              await this.writer.run(`CREATE TABLE IF NOT EXISTS ${l.table} AS ${source} LIMIT 0`);
              created.add(l.table);
              this.tables.add(l.table);
            }
            await this.writer.run(`INSERT INTO ${l.table} BY NAME ${source}`);
          }
          await this.writer.run('COMMIT');
        } catch (err) {
          await this.writer.run('ROLLBACK').catch(() => undefined);
          for (const t of created) this.tables.delete(t);
          throw err;
        }
      }
      for (const r of removals) this.loaded[r.kind].delete(r.period);
      for (const c of changes) this.loaded[c.kind].set(c.period, { etag: c.manifestEtag, runId: c.manifest.runId });
      const watermarkChanged = JSON.stringify(lakeWatermark) !== JSON.stringify(this.lakeWatermark);
      this.lakeWatermark = lakeWatermark;
      this.syncedAt = Date.now();
      if (changes.length > 0 || removals.length > 0 || watermarkChanged) {
        this.version += 1;
        this.log.info({ loaded: changes.length, removed: removals.length, watermark: lakeWatermark, version: this.version }, 'batch views synced');
      }
      return { loaded: changes.length, removed: removals.length, version: this.version };
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Sets or clears the operator's pin, then re-syncs. The pin is its own object,
   * written only here, so a publish rewriting watermark.json can never drop it.
   * The audit record is written first and never overwritten (If-None-Match), so
   * no pin takes effect without one.
   */
  async pin(pinnedEnd: number | null, audit: PinAuditInput = { keyId: 'unknown', requestId: randomBytes(8).toString('hex') }): Promise<Watermark> {
    const bucket = this.cfg.s3.bucket;
    const at = new Date();
    const previous = (await getJson<Pin>(this.s3, bucket, lakePaths.pin))?.pinnedEnd ?? (await getJson<Watermark>(this.s3, bucket, lakePaths.watermark))?.pinnedEnd ?? null;
    const record: PinAudit = {
      action: pinnedEnd === null ? 'unpin' : 'pin',
      pinnedEnd,
      previousPinnedEnd: previous,
      keyId: audit.keyId,
      requestId: audit.requestId,
      at: at.toISOString(),
    };
    const auditKey = lakePaths.pinAudit(at, audit.requestId);
    if ((await putJsonIf(this.s3, bucket, auditKey, record, { ifNoneMatch: '*' })) === null) {
      throw new Error(`pin audit record ${auditKey} already exists (request id reused?); pin not changed`);
    }
    const next: Pin = { pinnedEnd, updatedAt: at.toISOString(), keyId: audit.keyId, requestId: audit.requestId };
    await putJson(this.s3, bucket, lakePaths.pin, next);
    this.log.warn({ pinnedEnd, previousPinnedEnd: previous, keyId: audit.keyId, requestId: audit.requestId, audit: auditKey }, 'watermark pin changed');
    await this.sync();
    return this.lakeWatermark ?? { hourlyEnd: null, dailyEnd: null, pinnedEnd, updatedAt: next.updatedAt };
  }

  async query(sql: string, params: DuckDBValue[] = []): Promise<Row[]> {
    const con = await this.acquire();
    try {
      const reader = await con.runAndReadAll(sql, params);
      return (reader.getRowObjectsJS() as Array<Record<string, unknown>>).map((row) => {
        const out: Row = {};
        for (const [k, v] of Object.entries(row)) out[k] = plain(v);
        return out;
      });
    } finally {
      this.release(con);
    }
  }

  /**
   * A large result chunk by chunk (DuckDB's vectors, about 2,048 rows each), as columns of raw values:
   * the event loop serves requests between chunks instead of waiting for every row to be converted.
   * Holds one reader connection until the last chunk.
   */
  async *streamColumns(sql: string, params: DuckDBValue[] = []): AsyncGenerator<DuckDBValue[][]> {
    const con = await this.acquire();
    try {
      const result = await con.stream(sql, params);
      for (let chunk = await result.fetchChunk(); chunk !== null && chunk.rowCount > 0; chunk = await result.fetchChunk()) {
        yield chunk.getColumns();
      }
    } finally {
      this.release(con);
    }
  }

  private async acquire(): Promise<DuckDBConnection> {
    return this.idle.pop() ?? (await new Promise<DuckDBConnection>((r) => this.waiting.push(r)));
  }

  private release(con: DuckDBConnection): void {
    const next = this.waiting.shift();
    if (next) next(con);
    else this.idle.push(con);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.dirtyTimer) clearInterval(this.dirtyTimer);
    if (this.sub) this.sub.disconnect();
    await this.syncing?.catch(() => undefined);
    await this.polling?.catch(() => undefined);
    for (const c of this.readers) c.closeSync();
    this.writer.closeSync();
    this.instance.closeSync();
  }
}
