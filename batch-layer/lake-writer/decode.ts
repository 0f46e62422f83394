/**
 * What one consumed record becomes: the stream, the period and the NDJSON line it adds to a
 * file. A record in the collector's canonical form (canonical.ts) is not parsed: its own bytes
 * are the line, with its Kafka position appended, and DuckDB reads its columns from them. Free of I/O and of the consumer, so the benchmark (bench/lake-writer.ts) and the tests
 * run the writer's own per-record path without Kafka.
 */
import { decodeRecord, DLQ_REASONS, isEpochMs, RejectedRecord, type DeadLetter, type EventRecord } from '../../common/contract';
import { dayId } from '../../common/lake';
import { periodOf, type StreamKind } from './buffers';
import { canonicalExtra, canonicalTs } from './canonical';
import { dlqLine, rawLine } from './parquet';

/** One consumed record, decoded: the line it adds to a file of its stream and period. */
export interface Decoded {
  kind: StreamKind;
  /** The line, or (with head) what follows head on it. */
  line: string;
  /** The fast path: the record's bytes up to its closing brace, which line carries. */
  head?: Buffer;
  period: string;
  /** Why a record of the raw topic broke the contract (kind rawUnreadable). */
  rejected?: RejectedRecord;
}

/** The parts of a Kafka message the decoder reads (kafkajs' KafkaMessage has them). */
export interface MessageLike {
  value: Buffer;
  /** Decimal string, as kafkajs gives it. */
  offset: string;
  /** Epoch ms, decimal string. */
  timestamp: string;
}

/**
 * JSON.stringify writes a lone surrogate (a string JSON.parse accepts) as a `\udXXX` escape, which
 * DuckDB's read_json refuses, failing the whole file and so stalling its partition: write it as
 * U+FFFD, what any UTF-8 encoder makes of it.
 */
const LONE_SURROGATE = /(?<!\\)((?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;
export function wellFormedLine(line: string): string {
  return line.includes('\\ud') ? line.replace(LONE_SURROGATE, '$1\\ufffd') : line;
}

/** The line of a record decodeRecord took (the path of a record not in canonical form). */
export function decodedLine(record: EventRecord, partition: number, offset: string): string {
  return wellFormedLine(rawLine({ record, partition, offset }));
}

/** Parse a record of events.dlq; a broken one is still archived, wrapped as malformed. */
export function parseDeadLetter(value: string, fallbackReceivedAt: number): DeadLetter {
  try {
    const d = JSON.parse(value) as Partial<DeadLetter>;
    if (d && typeof d === 'object' && (DLQ_REASONS as readonly unknown[]).includes(d.reason) && typeof d.raw === 'string') {
      return {
        reason: d.reason!,
        detail: typeof d.detail === 'string' ? d.detail : '',
        received_at: isEpochMs(d.received_at) ? d.received_at : fallbackReceivedAt,
        raw: d.raw,
        ...(Number.isInteger(d.index) ? { index: d.index } : {}),
      };
    }
  } catch {
    /* archived below as malformed */
  }
  return { reason: 'malformed_json', detail: 'unreadable dead letter on the DLQ topic', received_at: fallbackReceivedAt, raw: value };
}

/**
 * A record of the raw topic becomes a row of its event-time hour, or, if it breaks the contract
 * (decodeRecord), a dead letter of its arrival day; a record of the DLQ topic one of its day.
 */
export function decodeMessage(topic: string, raw: boolean, partition: number, message: MessageLike): Decoded {
  if (!raw) {
    const text = message.value.toString('utf8');
    const kafkaTs = Number(message.timestamp);
    const dead = parseDeadLetter(text, kafkaTs);
    return { kind: 'dlq', line: wellFormedLine(dlqLine({ dead, topic, partition, offset: message.offset })), period: dayId(dead.received_at) };
  }
  const ts = canonicalTs(message.value);
  if (ts >= 0) {
    // The record's own members, then its Kafka position: the columns rawLine would add to flattenRaw's.
    const extra = canonicalExtra();
    const position = `,"kafka_partition":${partition},"kafka_offset":${Number(message.offset)}`;
    const line = extra === null ? `${position}}` : `${position},"canonical_extra":${JSON.stringify(extra)}}`;
    return { kind: 'raw', line, head: message.value.subarray(0, message.value.length - 1), period: periodOf('raw', ts) };
  }
  const text = message.value.toString('utf8');
  const kafkaTs = Number(message.timestamp);
  const record = decodeRecord(text);
  if (!(record instanceof RejectedRecord)) {
    return { kind: 'raw', line: decodedLine(record, partition, message.offset), period: periodOf('raw', record.ts) };
  }
  const dead: DeadLetter = { reason: record.reason, detail: `unreadable on ${topic}: ${record.detail}`, received_at: kafkaTs, raw: text };
  return { kind: 'rawUnreadable', line: wellFormedLine(dlqLine({ dead, topic, partition, offset: message.offset })), period: dayId(kafkaTs), rejected: record };
}
