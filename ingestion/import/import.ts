/**
 * A historical import, as named steps per chunk of rows (the collector's path, without Kafka):
 *
 *   read → validate → pseudonymise → size → dedupe → write raw by event time → dead-letter → mark dirty → checkpoint
 *
 * Validation, derived dimensions, IP pseudonymisation and dead letters are the collector's own
 * functions; the lateness horizon is not applied (old events are what an import is for). Raw
 * objects go straight to `raw/events/dt=…/hour=…/`, in the lake writer's Parquet, under keys
 * derived from the import id and the rows they hold (`i-<importId>-<firstRow>-<lastRow>`), so
 * a retry rewrites the same object; closed hours and their days are marked dirty, as late data
 * is, so reconciliation (or `--backfill`) recomputes them.
 *
 * Resumable: `imports/<importId>/state.json` is written after each chunk's objects and markers.
 * A crash after an upload and before the checkpoint re-does the chunk: its rows that reached
 * the lake are found there by event_id (LakeIds) and not written again, and its dead letters
 * go to the same key. So a re-run of the same command loses nothing and duplicates nothing.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../../common/config';
import { DLQ_REASONS, validateEvent, type DeadLetter, type DlqReason, type EventRecord } from '../../common/contract';
import { dayId, hourId, hourStartMs, lakePaths, type RawRetentionRecord } from '../../common/lake';
import { getJson, putDirtyMarker, putJson, uploadFile } from '../../common/lake-io';
import { isHourClosed } from '../../batch-layer/lake-writer/buffers';
import { writeDlqParquet, writeRawParquet, type DlqRow, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { deadLetter } from '../collector/ingest';
import { pseudonymiser } from '../collector/pseudonymise';
import { LakeIds } from './lake-ids';
import { readChunks, type InputFile, type InputRow } from './read';

/** Imported rows carry no Kafka position: this partition, and their row number in the import as the offset. */
export const IMPORT_PARTITION = -1;

export interface ImportCounts {
  read: number;
  accepted: number;
  /** Skipped: a copy is already in the lake (within the dedupe horizon), or earlier in this import. */
  duplicatesInLake: number;
  duplicatesInImport: number;
  /** Skipped: their day's raw input was removed by retention, so the day can no longer be recomputed. */
  rawRetired: number;
  rejected: Partial<Record<DlqReason, number>>;
  rawObjects: number;
  dlqObjects: number;
}

/** `imports/<importId>/state.json`: the checkpoint, and the periods to recompute. */
export interface ImportState {
  importId: string;
  source: string;
  /** The import's clock: received_at of what it writes, and "now" of the validation rules; kept so a resume writes the same bytes. */
  startedAt: number;
  updatedAt: string;
  finishedAt?: string;
  chunkRows: number;
  files: { name: string; rowsDone: number; done: boolean }[];
  /** The next row number (kafka_offset of imported rows): unique within the import. */
  nextSeq: number;
  counts: ImportCounts;
  /** Hours and days the import wrote events to: what must be recomputed. */
  hours: string[];
  days: string[];
}

export interface ImportOptions {
  cfg: Config;
  s3: S3Client;
  importId: string;
  source: string;
  files: readonly InputFile[];
  scratch: string;
  dryRun?: boolean;
  now?: () => number;
  /** After each chunk (progress). */
  onChunk?: (state: ImportState, rows: number) => void;
}

export function statePath(importId: string): string {
  return `imports/${importId}/state.json`;
}

function rawKey(hour: string, importId: string, first: number, last: number): string {
  return `${lakePaths.rawHourPrefix(hour)}i-${importId}-${first}-${last}.parquet`;
}

function dlqKey(day: string, importId: string, first: number, last: number): string {
  return `${lakePaths.rawDlqPrefix}dt=${day}/i-${importId}-${first}-${last}.parquet`;
}

function emptyCounts(): ImportCounts {
  return { read: 0, accepted: 0, duplicatesInLake: 0, duplicatesInImport: 0, rawRetired: 0, rejected: {}, rawObjects: 0, dlqObjects: 0 };
}

/** The checkpoint of an earlier run of this import, or a fresh one. */
export async function loadState(opts: Pick<ImportOptions, 'cfg' | 's3' | 'importId' | 'source' | 'files' | 'now'>): Promise<{ state: ImportState; resumed: boolean }> {
  const found = await getJson<ImportState>(opts.s3, opts.cfg.s3.bucket, statePath(opts.importId));
  if (found) return { state: found, resumed: true };
  return {
    resumed: false,
    state: {
      importId: opts.importId,
      source: opts.source,
      startedAt: (opts.now ?? Date.now)(),
      updatedAt: new Date().toISOString(),
      chunkRows: opts.cfg.import.chunkRows,
      files: opts.files.map((f) => ({ name: f.name, rowsDone: 0, done: false })),
      nextSeq: 0,
      counts: emptyCounts(),
      hours: [],
      days: [],
    },
  };
}

/** What a chunk's rows became. */
interface Chunk {
  firstSeq: number;
  rows: number;
  accepted: RawRow[];
  rejected: DlqRow[];
}

/**
 * When the event was first received: its own `received_at` (a re-import of records that carry it),
 * else its `sent_at` (the client's send time; no clock-skew correction is possible without the
 * receive time), else the import's clock. Read and removed, so it does not land in `extra`.
 */
export function receivedAtOf(parsed: unknown, clock: number): { event: unknown; receivedAt: number } {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { event: parsed, receivedAt: clock };
  const { received_at: given, ...event } = parsed as Record<string, unknown>;
  if (Number.isSafeInteger(given) && (given as number) > 0) return { event, receivedAt: given as number };
  const sent = (parsed as Record<string, unknown>).sent_at;
  return { event: parsed, receivedAt: Number.isSafeInteger(sent) && (sent as number) > 0 ? (sent as number) : clock };
}

export class Importer {
  private readonly ips;
  private readonly lakeIds: LakeIds;
  private readonly retired = new Map<string, boolean>();
  private readonly marked = new Set<string>();

  constructor(
    private readonly opts: ImportOptions,
    readonly state: ImportState,
  ) {
    this.ips = pseudonymiser(opts.cfg);
    this.lakeIds = new LakeIds(opts.s3, opts.cfg.s3.bucket, opts.cfg.batch.latenessHorizonMs, `i-${opts.importId}-`, path.join(opts.scratch, 'ids'));
  }

  /** Import every file from its checkpoint on; the state is the summary. */
  async run(): Promise<ImportState> {
    const { files } = this.opts;
    for (let f = 0; f < files.length; f++) {
      const progress = this.state.files[f];
      if (progress.done) continue;
      for await (const rows of readChunks(files[f], progress.rowsDone, this.state.chunkRows)) {
        await this.chunk(rows);
        progress.rowsDone += rows.length;
        await this.checkpoint();
        this.opts.onChunk?.(this.state, rows.length);
      }
      progress.done = true;
      await this.checkpoint();
    }
    this.state.finishedAt = new Date().toISOString();
    await this.checkpoint();
    return this.state;
  }

  private async chunk(rows: InputRow[]): Promise<void> {
    const chunk: Chunk = { firstSeq: this.state.nextSeq, rows: rows.length, accepted: [], rejected: [] };
    const records = this.validate(rows, chunk);
    await this.dedupe(records, chunk);
    this.state.counts.read += rows.length;
    this.state.nextSeq += rows.length;
    if (this.opts.dryRun) {
      this.count(chunk, 0, 0);
      return;
    }
    const touched = await this.writeRaw(chunk);
    const dlqObjects = await this.writeDeadLetters(chunk);
    await this.markDirty(touched);
    this.count(chunk, touched.size, dlqObjects);
  }

  /** validate → pseudonymise → size, each row as the collector would; rejected rows become dead letters. */
  private validate(rows: InputRow[], chunk: Chunk): Array<{ record: EventRecord; seq: number } | undefined> {
    const { cfg } = this.opts;
    const clock = this.state.startedAt;
    const reject = (seq: number, row: InputRow, reason: DlqReason, detail: string) => {
      const letter = JSON.parse(deadLetter(this.ips, reason, `${detail} (import ${this.state.importId}: ${row.where})`, row.raw, clock).value) as DeadLetter;
      chunk.rejected.push({ dead: letter, topic: undefined, partition: IMPORT_PARTITION, offset: String(seq) });
    };
    return rows.map((row, i) => {
      const seq = chunk.firstSeq + i;
      if (row.parseError !== undefined) return void reject(seq, row, 'malformed_json', row.parseError);
      const { event, receivedAt } = receivedAtOf(row.parsed, clock);
      const v = validateEvent(event, receivedAt, { latenessHorizonMs: Infinity });
      if (!v.ok) return void reject(seq, row, v.reason, v.detail);
      const record = this.ips.record(v.record);
      const bytes = JSON.stringify(record).length;
      if (bytes > cfg.collector.maxEventBytes) {
        return void reject(seq, row, 'size_violation', `event record is ${bytes} bytes, over the limit of ${cfg.collector.maxEventBytes} (COLLECTOR_MAX_EVENT_BYTES)`);
      }
      return { record, seq };
    });
  }

  /** Skip what the lake (within the dedupe horizon) or this import already holds, and days whose raw retention ran. */
  private async dedupe(records: Array<{ record: EventRecord; seq: number } | undefined>, chunk: Chunk): Promise<void> {
    const valid = records.filter((r): r is { record: EventRecord; seq: number } => r !== undefined);
    if (valid.length === 0) return;
    let min = Infinity;
    let max = -Infinity;
    for (const { record } of valid) {
      min = Math.min(min, record.ts);
      max = Math.max(max, record.ts);
    }
    await this.lakeIds.cover(min, max);
    for (const { record, seq } of valid) {
      const hour = hourId(record.ts);
      if (await this.rawRetired(hour.slice(0, 10))) {
        this.state.counts.rawRetired += 1;
        continue;
      }
      const hourMs = hourStartMs(hour);
      const copy = this.lakeIds.copyOf(record.event_id, hourMs);
      if (copy !== null && copy.ownSeq === seq) {
        // This very row reached the lake before a crash: it counts as accepted, and is not written again.
        this.state.counts.accepted += 1;
        this.touch(hour);
        continue;
      }
      if (copy !== null) {
        if (copy.ownSeq === null) this.state.counts.duplicatesInLake += 1;
        else this.state.counts.duplicatesInImport += 1;
        continue;
      }
      this.lakeIds.add(record.event_id, hourMs, seq);
      this.state.counts.accepted += 1;
      this.touch(hour);
      chunk.accepted.push({ record, partition: IMPORT_PARTITION, offset: String(seq) });
    }
  }

  private async rawRetired(day: string): Promise<boolean> {
    let gone = this.retired.get(day);
    if (gone === undefined) {
      gone = (await getJson<RawRetentionRecord>(this.opts.s3, this.opts.cfg.s3.bucket, lakePaths.rawRetention(day))) !== null;
      this.retired.set(day, gone);
    }
    return gone;
  }

  private touch(hour: string): void {
    if (!this.state.hours.includes(hour)) this.state.hours = [...this.state.hours, hour].sort();
    const day = hour.slice(0, 10);
    if (!this.state.days.includes(day)) this.state.days = [...this.state.days, day].sort();
  }

  /** One object per event-time hour of the chunk, rows in input order. */
  private async writeRaw(chunk: Chunk): Promise<Set<string>> {
    const byHour = new Map<string, RawRow[]>();
    for (const row of chunk.accepted) {
      const hour = hourId(row.record.ts);
      let rows = byHour.get(hour);
      if (!rows) byHour.set(hour, (rows = []));
      rows.push(row);
    }
    for (const [hour, rows] of byHour) {
      const key = rawKey(hour, this.state.importId, Number(rows[0].offset), Number(rows[rows.length - 1].offset));
      await this.upload(key, (file) => writeRawParquet(rows, file));
    }
    return new Set(byHour.keys());
  }

  /** The chunk's dead letters in one object of the DLQ zone, on the day of the import's clock (as the DLQ writer files them by arrival). */
  private async writeDeadLetters(chunk: Chunk): Promise<number> {
    if (chunk.rejected.length === 0) return 0;
    const last = chunk.firstSeq + chunk.rows - 1;
    const key = dlqKey(dayId(this.state.startedAt), this.state.importId, chunk.firstSeq, last);
    await this.upload(key, (file) => writeDlqParquet(chunk.rejected, file));
    return 1;
  }

  private async upload(key: string, write: (file: string) => Promise<void>): Promise<void> {
    const file = path.join(this.opts.scratch, 'out', key);
    try {
      await write(file);
      await uploadFile(this.opts.s3, this.opts.cfg.s3.bucket, key, file, { partSize: this.opts.cfg.lake.partSizeBytes });
    } finally {
      await fsp.rm(file, { force: true });
    }
  }

  /** As the lake writer does for late data: a closed hour that got events, and its day, are recomputed. */
  private async markDirty(hours: Set<string>): Promise<void> {
    const { s3, cfg } = this.opts;
    const now = (this.opts.now ?? Date.now)();
    for (const hour of hours) {
      if (this.marked.has(hour) || !isHourClosed(hour, now)) continue;
      const reason = `historical import ${this.state.importId}`;
      await putDirtyMarker(s3, cfg.s3.bucket, { kind: 'hourly', period: hour, markedAt: now, reason });
      await putDirtyMarker(s3, cfg.s3.bucket, { kind: 'daily', period: hour.slice(0, 10), markedAt: now, reason });
      this.marked.add(hour);
    }
  }

  private count(chunk: Chunk, rawObjects: number, dlqObjects: number): void {
    const c = this.state.counts;
    for (const r of chunk.rejected) c.rejected[r.dead.reason] = (c.rejected[r.dead.reason] ?? 0) + 1;
    c.rawObjects += rawObjects;
    c.dlqObjects += dlqObjects;
  }

  private async checkpoint(): Promise<void> {
    if (this.opts.dryRun) return;
    this.state.updatedAt = new Date().toISOString();
    await putJson(this.opts.s3, this.opts.cfg.s3.bucket, statePath(this.state.importId), this.state);
  }
}

/** Rejected counts in the taxonomy's order. */
export function rejectedByReason(counts: ImportCounts): Array<[DlqReason, number]> {
  return DLQ_REASONS.filter((r) => (counts.rejected[r] ?? 0) > 0).map((r) => [r, counts.rejected[r]!]);
}
