/**
 * What one consumed record becomes: the stream, the period and the NDJSON line it adds to a
 * file. Free of I/O and of the consumer, so the benchmark (bench/lake-writer.ts) and the tests
 * run the writer's own per-record path without Kafka.
 */
import { decodeRecord, DLQ_REASONS, isEpochMs, RejectedRecord, type DeadLetter } from '../../common/contract';
import { dayId } from '../../common/lake';
import { periodOf, type StreamKind } from './buffers';
import { dlqLine, rawLine } from './parquet';

/** One consumed record, decoded: the line it adds to a file of its stream and period. */
export interface Decoded {
  kind: StreamKind;
  line: string;
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
  const text = message.value.toString('utf8');
  const kafkaTs = Number(message.timestamp);
  if (!raw) {
    const dead = parseDeadLetter(text, kafkaTs);
    return { kind: 'dlq', line: dlqLine({ dead, topic, partition, offset: message.offset }), period: dayId(dead.received_at) };
  }
  const record = decodeRecord(text);
  if (!(record instanceof RejectedRecord)) {
    return { kind: 'raw', line: rawLine({ record, partition, offset: message.offset }), period: periodOf('raw', record.ts) };
  }
  const dead: DeadLetter = { reason: record.reason, detail: `unreadable on ${topic}: ${record.detail}`, received_at: kafkaTs, raw: text };
  return { kind: 'rawUnreadable', line: dlqLine({ dead, topic, partition, offset: message.offset }), period: dayId(kafkaTs), rejected: record };
}
