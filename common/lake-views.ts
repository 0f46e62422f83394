/**
 * The views a data scientist queries (`npm run lake`; the DLQ tool reads `dlq`
 * through the same session), each over one prefix of the lake, and
 * the session that stages their objects into a scratch dir and declares them
 * in an embedded DuckDB (httpfs cannot be downloaded here, see STACK-NOTES).
 * Raw views read every object under their prefix; batch views only the objects
 * the periods' current manifests name: a period's folder can also hold a
 * superseded run (kept a while for readers of the previous manifest) or a run
 * that died before publishing, and reading those would count a period twice.
 */
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import fsp from 'node:fs/promises';
import { LAKE_TABLES, lakePaths, type PeriodKind, type RunManifest } from './lake';
import { getJson, listObjects, stageObjects } from './lake-io';

export interface LakeView {
  name: string;
  prefix: string;
  /** Objects are per hour (`dt=…/hour=…/`), not per day. */
  hourly: boolean;
  description: string;
  /** A batch table: its objects are the ones the manifests of this kind name for this table. */
  published?: { kind: PeriodKind; table: string };
}

/** The raw zone's views, then one per batch table of the catalog (`LAKE_TABLES`). */
export const LAKE_VIEWS: readonly LakeView[] = [
  { name: 'raw_events', prefix: lakePaths.rawEventsPrefix, hourly: true, description: 'the master dataset: every event as received, duplicates included' },
  { name: 'dlq', prefix: lakePaths.rawDlqPrefix, hourly: false, description: 'dead letters: rejected events with their reason and original bytes' },
  ...LAKE_TABLES.map((t) => ({
    name: t.view ?? t.table,
    prefix: lakePaths.tableRoot(t.zone, t.table),
    hourly: t.period === 'hourly',
    description: t.description,
    published: { kind: t.period, table: t.table },
  })),
];

export class LakeCliError extends Error {
  override name = 'LakeCliError';
}

/** Inclusive day range on the `dt=` partition of each key; keys without one are kept. */
export interface DayRange {
  from?: string;
  to?: string;
}

export function inRange(key: string, range: DayRange): boolean {
  const m = /(?:^|\/)dt=(\d{4}-\d{2}-\d{2})\//.exec(key);
  if (!m) return true;
  return (!range.from || m[1] >= range.from) && (!range.to || m[1] <= range.to);
}

/** Views a query mentions (by whole word), in catalog order. */
export function viewsIn(sql: string): LakeView[] {
  return LAKE_VIEWS.filter((v) => new RegExp(`\\b${v.name}\\b`, 'i').test(sql));
}

export interface StageProgress {
  start(total: number, view: string): void;
  update(done: number): void;
  stop(): void;
}

export interface ViewInfo {
  view: LakeView;
  objects: number;
  bytes: number;
}

/** One DuckDB over a scratch dir; views are staged on first use. */
export class LakeSession {
  private readonly staged = new Map<string, ViewInfo>();
  private constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly dir: string,
    private readonly range: DayRange,
    private readonly db: DuckDBInstance,
    readonly conn: DuckDBConnection,
    private readonly progress?: StageProgress,
  ) {}

  static async open(opts: { s3: S3Client; bucket: string; dir: string; range?: DayRange; progress?: StageProgress }): Promise<LakeSession> {
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    return new LakeSession(opts.s3, opts.bucket, opts.dir, opts.range ?? {}, db, conn, opts.progress);
  }

  close(): void {
    this.conn.closeSync();
    this.db.closeSync();
  }

  /** Stage a view's objects and declare it; a view without objects is not declared (returns objects: 0). */
  async ensure(view: LakeView): Promise<ViewInfo> {
    const known = this.staged.get(view.name);
    if (known) return known;
    const keys = view.published
      ? await this.publishedKeys(view.published.kind, view.published.table)
      : (await listObjects(this.s3, this.bucket, view.prefix)).filter((o) => o.key.endsWith('.parquet') && inRange(o.key, this.range)).map((o) => o.key);
    const info: ViewInfo = { view, objects: keys.length, bytes: 0 };
    if (keys.length > 0) {
      this.progress?.start(keys.length, view.name);
      try {
        const files = await stageObjects(this.s3, this.bucket, keys, this.dir, {
          concurrency: 8,
          onProgress: (done) => this.progress?.update(done),
        });
        for (const f of files) info.bytes += (await fsp.stat(f)).size;
      } finally {
        this.progress?.stop();
      }
      const glob = path.join(this.dir, view.prefix, '**', '*.parquet').replaceAll("'", "''");
      await this.conn.run(
        // Declared types: inference would read hour=03 as text and hour=10 as a number.
        `CREATE OR REPLACE VIEW ${view.name} AS SELECT * FROM read_parquet('${glob}', hive_partitioning = true, union_by_name = true,
           hive_types = ${view.hourly ? "{'dt': DATE, 'hour': INTEGER}" : "{'dt': DATE}"})`,
      );
    }
    this.staged.set(view.name, info);
    return info;
  }

  /**
   * The objects the current manifests name for a batch table, in the day range. Days whose
   * batch views retention removed keep their manifests (history) but not their objects.
   */
  private async publishedKeys(kind: PeriodKind, table: string): Promise<string[]> {
    const manifests = (await this.manifestKeys(kind)).filter((k) => {
      const day = /dt=(\d{4}-\d{2}-\d{2})/.exec(k)?.[1];
      return day !== undefined && (!this.range.from || day >= this.range.from) && (!this.range.to || day <= this.range.to);
    });
    const expired = new Set(
      (await listObjects(this.s3, this.bucket, lakePaths.aggregatedRetentionPrefix)).map((o) => /dt=(\d{4}-\d{2}-\d{2})\.json$/.exec(o.key)?.[1]),
    );
    const keys: string[] = [];
    for (let i = 0; i < manifests.length; i += 16) {
      const batch = await Promise.all(manifests.slice(i, i + 16).map((k) => this.manifest(k)));
      for (const m of batch) {
        const key = m?.outputs[table];
        if (key && !(key.startsWith('aggregated/') && expired.has(m.period.slice(0, 10)))) keys.push(key);
      }
    }
    return keys;
  }

  private readonly manifestCache = new Map<string, Promise<RunManifest | null>>();
  private listedManifests = new Map<PeriodKind, Promise<string[]>>();

  private manifestKeys(kind: PeriodKind): Promise<string[]> {
    let p = this.listedManifests.get(kind);
    if (!p) {
      p = listObjects(this.s3, this.bucket, lakePaths.manifestPrefix(kind)).then((os) => os.map((o) => o.key).filter((k) => k.endsWith('.json')));
      this.listedManifests.set(kind, p);
    }
    return p;
  }

  /** Read once per session, so every view of a period names the same run. */
  private manifest(key: string): Promise<RunManifest | null> {
    let p = this.manifestCache.get(key);
    if (!p) {
      p = getJson<RunManifest>(this.s3, this.bucket, key);
      this.manifestCache.set(key, p);
    }
    return p;
  }

  /** Stage whatever the SQL mentions. Returns the mentioned views that have no objects. */
  async prepare(sql: string): Promise<LakeView[]> {
    const missing: LakeView[] = [];
    for (const v of viewsIn(sql)) if ((await this.ensure(v)).objects === 0) missing.push(v);
    return missing;
  }

  /** Turn DuckDB's "table does not exist" into a message that lists what there is. */
  explain(err: unknown, missing: LakeView[]): LakeCliError {
    const msg = (err as Error).message ?? String(err);
    const names = LAKE_VIEWS.map((v) => v.name).join(', ');
    if (/Table with name (\S+) does not exist/i.test(msg)) {
      const name = /Table with name (\S+) does not exist/i.exec(msg)![1];
      const empty = missing.find((v) => v.name.toLowerCase() === name.toLowerCase());
      if (empty) {
        return new LakeCliError(
          `${empty.name} has no objects under s3://${this.bucket}/${empty.prefix}${this.rangeText()} (has the batch layer published it yet?)`,
        );
      }
      return new LakeCliError(`unknown table ${name}; the lake's tables are: ${names}`);
    }
    return new LakeCliError(msg);
  }

  private rangeText(): string {
    if (!this.range.from && !this.range.to) return '';
    return ` for days ${this.range.from ?? '…'} to ${this.range.to ?? '…'}`;
  }
}
