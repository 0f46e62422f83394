/**
 * The lake writer's bookkeeping, free of I/O so it can be tested on its own:
 * which file a record goes to, when a file rolls, and how far a partition's
 * offsets may be committed.
 *
 * One Kafka partition feeds several open files at once (one per event-time
 * hour), so a finished upload does not make its partition committable up to
 * its last offset: an older record may still sit in another hour's open file.
 * The committable offset is the lowest first offset of any file not yet
 * uploaded (open or uploading), or the next offset to consume when none is.
 */
import { hourId, dayId, hourStartMs, lakePaths } from '../../common/lake';

export type StreamKind = 'raw' | 'dlq' | 'rawUnreadable';

export interface FileBuffer {
  kind: StreamKind;
  topic: string;
  partition: number;
  /** Hour (`YYYY-MM-DDTHH`) for raw files, day (`YYYY-MM-DD`) for dead letters. */
  period: string;
  firstOffset: bigint;
  lastOffset: bigint;
  /** NDJSON lines (rawLine/dlqLine, or a canonical record's own bytes: decode.ts) as UTF-8: a record costs its encoded size, off the V8 heap. */
  rows: LineChunks;
  bytes: number;
  openedAt: number;
}

/** Chunks start this small (a late straggler's file holds a few lines) and double up to MAX. */
const MIN_CHUNK_BYTES = 16 * 1024;
const MAX_CHUNK_BYTES = 1024 * 1024;

/**
 * A file's NDJSON lines, UTF-8 encoded into chunks as they arrive. Held as strings they cost
 * the V8 heap and the collector's time, and were copied again into the temporary NDJSON file;
 * as bytes they are written there as they are.
 */
export class LineChunks {
  /** Filled chunks, each cut to its used bytes. */
  private readonly full: Buffer[] = [];
  private current: Buffer | null = null;
  private used = 0;
  /** Lines appended. */
  length = 0;
  /** Bytes appended, newlines included. */
  bytes = 0;

  /** Append one line, `head` (bytes, copied as they are) then `line` (a newline is added); returns the bytes it took. */
  append(line: string, head?: Buffer): number {
    const headBytes = head === undefined ? 0 : head.length;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    const worst = headBytes + line.length * 3 + 1;
    if (this.current === null || this.current.length - this.used < worst) this.grow(worst);
    const cur = this.current!;
    if (head !== undefined) head.copy(cur, this.used);
    const n = headBytes + cur.write(line, this.used + headBytes, 'utf8');
    cur[this.used + n] = 0x0a;
    this.used += n + 1;
    this.length += 1;
    this.bytes += n + 1;
    return n + 1;
  }

  /** The bytes, chunk by chunk (views, not copies). */
  chunks(): Buffer[] {
    return this.current === null ? [...this.full] : [...this.full, this.current.subarray(0, this.used)];
  }

  private grow(atLeast: number): void {
    if (this.current !== null && this.used > 0) this.full.push(this.current.subarray(0, this.used));
    const size = Math.max(atLeast, Math.min(MAX_CHUNK_BYTES, Math.max(MIN_CHUNK_BYTES, this.bytes)));
    // Not from Buffer's shared pool: a chunk is freed with its file.
    this.current = Buffer.allocUnsafeSlow(size);
    this.used = 0;
  }
}

/** The object key of a file: a function of its period and its offsets only, so a retry rewrites the same object. */
export function objectKey(buf: Pick<FileBuffer, 'kind' | 'partition' | 'period' | 'firstOffset' | 'lastOffset'>): string {
  const first = buf.firstOffset.toString();
  const last = buf.lastOffset.toString();
  if (buf.kind === 'raw') return lakePaths.rawObject(buf.period, buf.partition, first, last);
  return lakePaths.dlqObject(buf.period, buf.partition, first, last, buf.kind === 'rawUnreadable' ? 'raw' : 'dlq');
}

/** An hour is closed (and data written into it late) once its end is not in the future. */
export function isHourClosed(hour: string, now: number): boolean {
  return hourStartMs(hour) + 3_600_000 <= now;
}

export function periodOf(kind: StreamKind, ts: number): string {
  return kind === 'raw' ? hourId(ts) : dayId(ts);
}

export interface RollPolicy {
  rollBytes: number;
  rollAgeMs: number;
}

export function shouldRoll(buf: FileBuffer, policy: RollPolicy, now: number): boolean {
  return buf.bytes >= policy.rollBytes || now - buf.openedAt >= policy.rollAgeMs;
}

/** Open files smaller than this are left to the age policy by passedFiles. */
export const CATCHUP_MIN_ROLL_BYTES = 64 * 1024;

/**
 * Files to roll after a batch of a partition that is far behind (catching up):
 * those the batch did not add to. A backlog spread over days of event time opens
 * a file per hour; read in offset order, an hour's records come together, so a
 * file the stream has moved past is complete. Rolling it at once, rather than
 * after the roll age, keeps memory to the hours of the last batches (instead of
 * the whole backlog) and commits as it goes. Files under CATCHUP_MIN_ROLL_BYTES
 * (late stragglers into old hours) keep the age policy: they gather more
 * stragglers instead of becoming an object each, and hold at most that much per
 * hour. Live traffic (lag below the threshold) keeps the size/age policy.
 */
export function passedFiles(state: PartitionState, touched: ReadonlySet<FileBuffer>, lag: number, catchupLag: number): FileBuffer[] {
  if (lag < catchupLag) return [];
  return [...state.open.values()].filter((b) => !touched.has(b) && b.bytes >= CATCHUP_MIN_ROLL_BYTES);
}

/**
 * Under memory pressure, the open files to roll: the largest first, until what
 * stays open is at most `target` bytes (rolling only a fixed few would leave a
 * backlog spread over many small files crawling at the cap).
 */
export function filesToRelieve(open: ReadonlyArray<FileBuffer>, target: number): FileBuffer[] {
  const sorted = [...open].sort((x, y) => y.bytes - x.bytes);
  let remaining = sorted.reduce((n, b) => n + b.bytes, 0);
  const out: FileBuffer[] = [];
  for (const b of sorted) {
    if (remaining <= target) break;
    out.push(b);
    remaining -= b.bytes;
  }
  return out;
}

/** Everything the writer holds for one topic-partition. */
export class PartitionState {
  /** Open files by `${kind}|${period}`. */
  readonly open = new Map<string, FileBuffer>();
  /** Files being written/uploaded: they hold offsets that are not safe to commit yet. */
  readonly uploading = new Set<FileBuffer>();
  /** Last consumed offset + 1; null before the first record of this assignment. */
  nextOffset: bigint | null = null;
  /** Last offset committed to Kafka (exclusive, Kafka's convention). */
  committed: bigint | null = null;

  constructor(
    readonly topic: string,
    readonly partition: number,
  ) {}

  /** Append a line (`head`, then `line`: LineChunks.append) to the open file of its stream and period; it counts `bytes` (default: its UTF-8 size). */
  add(kind: StreamKind, period: string, offset: bigint, line: string, bytes: number | undefined, now: number, head?: Buffer): FileBuffer {
    const id = `${kind}|${period}`;
    let buf = this.open.get(id);
    if (!buf) {
      buf = { kind, topic: this.topic, partition: this.partition, period, firstOffset: offset, lastOffset: offset, rows: new LineChunks(), bytes: 0, openedAt: now };
      this.open.set(id, buf);
    }
    const written = buf.rows.append(line, head);
    buf.lastOffset = offset;
    buf.bytes += bytes ?? written;
    this.consumed(offset);
    return buf;
  }

  /** A record that needs no file (e.g. a tombstone) still moves the partition forward. */
  consumed(offset: bigint): void {
    if (this.nextOffset === null || offset + 1n > this.nextOffset) this.nextOffset = offset + 1n;
  }

  /** Move an open file to the uploading set; the caller writes it. */
  take(buf: FileBuffer): void {
    this.open.delete(`${buf.kind}|${buf.period}`);
    this.uploading.add(buf);
  }

  uploaded(buf: FileBuffer): void {
    this.uploading.delete(buf);
  }

  /** The offset that may be committed now (exclusive), or null when nothing was consumed. */
  committable(): bigint | null {
    let low = this.nextOffset;
    for (const b of this.open.values()) if (low === null || b.firstOffset < low) low = b.firstOffset;
    for (const b of this.uploading) if (low === null || b.firstOffset < low) low = b.firstOffset;
    return low;
  }

  /**
   * A new consumer-group generation re-reads from the committed offset, so
   * open files would be filled a second time: drop them (what they held is
   * not committed, hence redelivered). Files already uploading finish normally.
   */
  resetForRedelivery(): number {
    let dropped = 0;
    for (const b of this.open.values()) dropped += b.rows.length;
    this.open.clear();
    this.nextOffset = null;
    return dropped;
  }

  bufferedBytes(): number {
    let n = 0;
    for (const b of this.open.values()) n += b.bytes;
    for (const b of this.uploading) n += b.bytes;
    return n;
  }
}
