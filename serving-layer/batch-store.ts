/**
 * The batch views, served from an embedded DuckDB. DuckDB's httpfs cannot be
 * downloaded here, so published objects are downloaded through the S3 SDK and
 * loaded into in-memory tables (one per batch view, `_period` column added).
 *
 * Only periods whose manifest exists are loaded (publishing = manifest written
 * last), and one sync applies all its changes in one transaction, so a query
 * sees either the previous state or the new one, never half a run. The
 * watermark the merge uses is the lake's (which accounts for dirty periods and
 * the pin), further capped by what this process has loaded.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api';
import type { Redis } from 'ioredis';
import { getJson, listObjects, putJson, stageObjects } from '../batch-layer/lake-io';
import type { Config } from '../common/config';
import { dayStartMs, hourStartMs, lakePaths, type PeriodKind, type RunManifest, type Watermark } from '../common/lake';
import type { Logger } from '../common/log';
import type { WatermarkView } from './merge';

/** The batch views the API serves, by the period kind that publishes them. */
export const SERVED_TABLES: Record<PeriodKind, readonly string[]> = {
  hourly: ['hourly_events', 'hourly_users', 'hourly_playback'],
  daily: ['daily_sessions', 'retention_cohorts', 'clicks_to_play', 'top_paths', 'binge_users', 'daily_aggregates_with_dimensions'],
};

const MANIFEST_KEY = {
  hourly: /^_manifests\/hourly\/dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\.json$/,
  daily: /^_manifests\/daily\/dt=(\d{4}-\d{2}-\d{2})\.json$/,
} as const;

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

/** The contiguous run of loaded periods starting at the earliest one: [start, end). */
function contiguous(kind: PeriodKind, periods: Iterable<string>): { start: number | null; end: number | null } {
  const starts = [...periods].map((p) => startOf(kind, p)).sort((a, b) => a - b);
  if (starts.length === 0) return { start: null, end: null };
  const set = new Set(starts);
  let t = starts[0];
  while (set.has(t)) t += PERIOD_MS[kind];
  return { start: starts[0], end: t };
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
    if (subscriber) {
      this.sub = subscriber;
      const channel = `${this.cfg.redis.keyPrefix}watermark`;
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

  /** The watermark as the merge applies it: the lake's computed ends, capped by what is loaded here, and the pin. */
  watermark(): WatermarkView {
    const view = (kind: PeriodKind, lakeEnd: number | null | undefined) => {
      const here = contiguous(kind, this.loaded[kind].keys());
      if (here.start === null || here.end === null || lakeEnd === null || lakeEnd === undefined) return { start: null, end: null };
      const end = Math.min(here.end, lakeEnd);
      return end > here.start ? { start: here.start, end } : { start: null, end: null };
    };
    return {
      hourly: view('hourly', this.lakeWatermark?.hourlyEnd),
      daily: view('daily', this.lakeWatermark?.dailyEnd),
      pinnedEnd: this.lakeWatermark?.pinnedEnd ?? null,
    };
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
    // Watermark first: anything listed afterwards is at least as new, so the cap below never lets it run ahead.
    const lakeWatermark = await getJson<Watermark>(this.s3, bucket, lakePaths.watermark);
    const changes: Array<{ kind: PeriodKind; period: string; manifestEtag: string; manifest: RunManifest }> = [];
    const removals: Array<{ kind: PeriodKind; period: string }> = [];
    for (const kind of ['hourly', 'daily'] as const) {
      const listed = new Map<string, string>();
      for (const o of await listObjects(this.s3, bucket, `_manifests/${kind}/`)) {
        const m = MANIFEST_KEY[kind].exec(o.key);
        if (m) listed.set(kind === 'hourly' ? `${m[1]}T${m[2]}` : m[1], o.etag);
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

  /** Sets or clears the operator's pin in the lake's watermark, then re-syncs. */
  async pin(pinnedEnd: number | null): Promise<Watermark> {
    const bucket = this.cfg.s3.bucket;
    const current = await getJson<Watermark>(this.s3, bucket, lakePaths.watermark);
    const next: Watermark = {
      hourlyEnd: current?.hourlyEnd ?? null,
      dailyEnd: current?.dailyEnd ?? null,
      pinnedEnd,
      updatedAt: new Date().toISOString(),
    };
    await putJson(this.s3, bucket, lakePaths.watermark, next);
    await this.sync();
    return next;
  }

  async query(sql: string, params: DuckDBValue[] = []): Promise<Row[]> {
    const con = this.idle.pop() ?? (await new Promise<DuckDBConnection>((r) => this.waiting.push(r)));
    try {
      const reader = await con.runAndReadAll(sql, params);
      return (reader.getRowObjectsJS() as Array<Record<string, unknown>>).map((row) => {
        const out: Row = {};
        for (const [k, v] of Object.entries(row)) out[k] = plain(v);
        return out;
      });
    } finally {
      const next = this.waiting.shift();
      if (next) next(con);
      else this.idle.push(con);
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.sub) this.sub.disconnect();
    await this.syncing?.catch(() => undefined);
    for (const c of this.readers) c.closeSync();
    this.writer.closeSync();
    this.instance.closeSync();
  }
}
