import { describe, expect, it } from 'vitest';
import { decodeRecord, RejectedRecord, validateEvent, type EventRecord } from '../../common/contract';
import { lakePaths } from '../../common/lake';
import { PartitionState, isHourClosed, objectKey, periodOf, shouldRoll } from '../../batch-layer/lake-writer/buffers';
import { rawLine } from '../../batch-layer/lake-writer/parquet';
import { parseDeadLetter } from '../../batch-layer/lake-writer/writer';

const H10 = Date.UTC(2024, 4, 1, 10, 15);
const H11 = Date.UTC(2024, 4, 1, 11, 5);

function rec(id: string, ts: number): EventRecord {
  const v = validateEvent({ event_id: id, event_type: 'click', user_id: 'u1', timestamp: ts }, ts);
  if (!v.ok) throw new Error(v.detail);
  return v.record;
}
const row = (id: string, ts: number, offset: number): string => rawLine({ record: rec(id, ts), partition: 2, offset: String(offset) });

describe('object keys', () => {
  it('derive from period, partition and offsets only', () => {
    const key = objectKey({ kind: 'raw', partition: 2, period: '2024-05-01T10', firstOffset: 7n, lastOffset: 19n });
    expect(key).toBe('raw/events/dt=2024-05-01/hour=10/p2-7-19.parquet');
    expect(key).toBe(lakePaths.rawObject('2024-05-01T10', 2, '7', '19'));
    expect(objectKey({ kind: 'dlq', partition: 0, period: '2024-05-01', firstOffset: 0n, lastOffset: 3n })).toBe(
      'raw/dlq/dt=2024-05-01/p0-0-3.parquet',
    );
    expect(objectKey({ kind: 'rawUnreadable', partition: 0, period: '2024-05-01', firstOffset: 0n, lastOffset: 3n })).toBe(
      'raw/dlq/dt=2024-05-01/raw-p0-0-3.parquet',
    );
  });

  it('bucket raw records by event-time hour, dead letters by day', () => {
    expect(periodOf('raw', H10)).toBe('2024-05-01T10');
    expect(periodOf('raw', Date.UTC(2024, 4, 1, 23, 59, 59, 999))).toBe('2024-05-01T23');
    expect(periodOf('dlq', H11)).toBe('2024-05-01');
  });

  it('call an hour closed once its end is not in the future', () => {
    expect(isHourClosed('2024-05-01T10', Date.UTC(2024, 4, 1, 10, 59, 59, 999))).toBe(false);
    expect(isHourClosed('2024-05-01T10', Date.UTC(2024, 4, 1, 11))).toBe(true);
  });
});

describe('PartitionState', () => {
  it('groups a partition into one open file per hour with first/last offsets', () => {
    const s = new PartitionState('events.raw', 2);
    s.add('raw', '2024-05-01T10', 5n, row('a', H10, 5), 100, 0);
    s.add('raw', '2024-05-01T11', 6n, row('b', H11, 6), 100, 0);
    s.add('raw', '2024-05-01T10', 7n, row('c', H10, 7), 100, 0);
    const files = [...s.open.values()].map((b) => [b.period, b.firstOffset, b.lastOffset, b.rows.length, b.bytes]);
    expect(files).toEqual([
      ['2024-05-01T10', 5n, 7n, 2, 200],
      ['2024-05-01T11', 6n, 6n, 1, 100],
    ]);
  });

  it('commits only up to the lowest offset not yet uploaded, across interleaved hours', () => {
    const s = new PartitionState('events.raw', 2);
    expect(s.committable()).toBeNull();
    s.add('raw', '2024-05-01T10', 0n, row('a', H10, 0), 1, 0);
    s.add('raw', '2024-05-01T11', 1n, row('b', H11, 1), 1, 0);
    s.add('raw', '2024-05-01T10', 2n, row('c', H10, 2), 1, 0);
    s.add('raw', '2024-05-01T11', 3n, row('d', H11, 3), 1, 0);
    const [h10, h11] = [...s.open.values()];
    expect(s.committable()).toBe(0n);

    // Hour 11 (offsets 1, 3) uploaded first: offset 0 still sits in hour 10's file.
    s.take(h11);
    expect(s.committable()).toBe(0n);
    s.uploaded(h11);
    expect(s.committable()).toBe(0n);

    // Hour 10 being uploaded still holds offset 0.
    s.take(h10);
    expect(s.committable()).toBe(0n);
    s.uploaded(h10);
    expect(s.committable()).toBe(4n);

    // A new record opens a file: nothing past it until it is uploaded.
    const next = s.add('raw', '2024-05-01T10', 4n, row('e', H10, 4), 1, 0);
    expect(s.committable()).toBe(4n);
    s.take(next);
    s.uploaded(next);
    expect(s.committable()).toBe(5n);
  });

  it('a record without a file (tombstone) still moves the partition forward', () => {
    const s = new PartitionState('events.raw', 0);
    s.consumed(9n);
    expect(s.committable()).toBe(10n);
  });

  it('drops open files on a rebalance but keeps uploading ones blocking the commit', () => {
    const s = new PartitionState('events.raw', 2);
    const a = s.add('raw', '2024-05-01T10', 10n, row('a', H10, 10), 1, 0);
    s.add('raw', '2024-05-01T11', 11n, row('b', H11, 11), 1, 0);
    s.take(a);
    expect(s.resetForRedelivery()).toBe(1);
    expect(s.open.size).toBe(0);
    expect(s.committable()).toBe(10n);
    s.uploaded(a);
    expect(s.committable()).toBeNull();
  });

  it('rolls by size or by age', () => {
    const s = new PartitionState('events.raw', 2);
    const b = s.add('raw', '2024-05-01T10', 0n, row('a', H10, 0), 500, 1_000);
    expect(shouldRoll(b, { rollBytes: 1000, rollAgeMs: 60_000 }, 1_000)).toBe(false);
    expect(shouldRoll(b, { rollBytes: 500, rollAgeMs: 60_000 }, 1_000)).toBe(true);
    expect(shouldRoll(b, { rollBytes: 1000, rollAgeMs: 60_000 }, 61_000)).toBe(true);
  });
});

describe('record parsing', () => {
  it('reads a record of events.raw and refuses a broken one with a reason', () => {
    const r = rec('x', H10);
    const ok = decodeRecord(JSON.stringify(r));
    expect(ok).toEqual(r);
    const rejected = (text: string) => {
      const d = decodeRecord(text);
      return d instanceof RejectedRecord ? d.reason : 'accepted';
    };
    expect(rejected('{nope')).toBe('malformed_json');
    expect(rejected('[1]')).toBe('not_an_object');
    expect(rejected(JSON.stringify({ ...r, ts: 'soon' }))).toBe('schema_violation');
    // Out of Date's range: would make the hour key throw and block the partition.
    expect(rejected(JSON.stringify({ ...r, ts: 9e15 }))).toBe('schema_violation');
  });

  it('keeps a dead letter as sent, and wraps an unreadable one', () => {
    const d = { reason: 'schema_violation', detail: 'user_id is required', received_at: H10, raw: '{}', index: 2 };
    expect(parseDeadLetter(JSON.stringify(d), 0)).toEqual(d);
    expect(parseDeadLetter('garbage', 42)).toEqual({ reason: 'malformed_json', detail: 'unreadable dead letter on the DLQ topic', received_at: 42, raw: 'garbage' });
  });
});
