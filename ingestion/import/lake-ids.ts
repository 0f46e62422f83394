/**
 * The event ids the raw lake already holds around the hours an import writes to, so an
 * imported copy of an event the lake has is skipped by the batch layer's own rule
 * (docs/metrics.md §2): an event_id counts once when its copies' hours lie within the
 * dedupe horizon of each other. Days are read once, when a chunk first needs them.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance } from '@duckdb/node-api';
import { dayId, hourStartMs, lakePaths } from '../../common/lake';
import { listObjects, stageObjects } from '../../common/lake-io';

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/** Where the lake (or this import) holds a copy of an id. */
export interface KnownCopy {
  hourMs: number;
  /** The copy's row number when this import wrote it (its kafka_offset), else null. */
  ownSeq: number | null;
}

export class LakeIds {
  private readonly ids = new Map<string, KnownCopy>();
  private readonly loaded = new Set<string>();

  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly horizonMs: number,
    /** Object names this import writes start with this (`i-<importId>-`). */
    private readonly ownPrefix: string,
    private readonly scratch: string,
  ) {}

  /** Read the raw days within the horizon of [minTs, maxTs] not read yet. */
  async cover(minTs: number, maxTs: number): Promise<void> {
    const first = Math.floor((Math.floor(minTs / HOUR_MS) * HOUR_MS - this.horizonMs) / DAY_MS) * DAY_MS;
    for (let t = first; t <= maxTs + this.horizonMs; t += DAY_MS) {
      const day = dayId(t);
      if (this.loaded.has(day)) continue;
      await this.loadDay(day);
      this.loaded.add(day);
    }
  }

  /** The copy an event of `hourMs` would duplicate (within the horizon), or null. */
  copyOf(eventId: string, hourMs: number): KnownCopy | null {
    const known = this.ids.get(eventId);
    return known !== undefined && Math.abs(known.hourMs - hourMs) <= this.horizonMs ? known : null;
  }

  /** An event this import accepted: later copies in the import are duplicates of it. */
  add(eventId: string, hourMs: number, seq: number): void {
    if (!this.ids.has(eventId)) this.ids.set(eventId, { hourMs, ownSeq: seq });
  }

  private async loadDay(day: string): Promise<void> {
    const keys = (await listObjects(this.s3, this.bucket, lakePaths.rawDayPrefix(day))).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
    if (keys.length === 0) return;
    const dir = path.join(this.scratch, 'lake-ids', day);
    const files = await stageObjects(this.s3, this.bucket, keys, dir);
    const db = await DuckDBInstance.create(':memory:', { threads: '1' });
    const conn = await db.connect();
    try {
      const list = `[${files.map((f) => `'${f.replaceAll("'", "''")}'`).join(', ')}]`;
      const reader = await conn.runAndReadAll(
        `SELECT event_id, strftime(to_timestamp(ts // 1000), '%Y-%m-%dT%H') AS hour, kafka_offset::DOUBLE AS kafka_offset,
                starts_with(parse_filename(filename), ${`'${this.ownPrefix}'`}) AS own
         FROM read_parquet(${list}, filename = true, union_by_name = true)`,
      );
      for (const r of reader.getRowObjectsJS() as { event_id: string; hour: string; kafka_offset: number; own: boolean }[]) {
        const hourMs = hourStartMs(r.hour);
        const known = this.ids.get(r.event_id);
        // This import's own copy is the one that matters on a resume (was this very row written?).
        if (known === undefined || (r.own && known.ownSeq === null)) this.ids.set(r.event_id, { hourMs, ownSeq: r.own ? r.kafka_offset : null });
      }
    } finally {
      conn.closeSync();
      db.closeSync();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }
}
