/** The import's pure parts: a flat row as an event, the receive time it is judged at, the import id, the dedupe horizon. */
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { validateEvent } from '../../common/contract';
import { receivedAtOf } from '../../ingestion/import/import';
import { LakeIds } from '../../ingestion/import/lake-ids';
import { formatOf, importIdOf, toEvent, type InputFile } from '../../ingestion/import/read';

describe('toEvent', () => {
  it('nests properties and context by dotted or bare contract names, types CSV cells as the contract wants, drops empty cells', () => {
    const ev = toEvent(
      { event_id: 'e1', event_type: 'video_play', user_id: 'u', session_id: '', timestamp: '1739245640654', 'properties.device_type': 'tv', content_id: 'm1', playback_position: '12.5', location: 'DE-BE', 'context.ip_address': '192.0.2.7', campaign: 'x' },
      true,
    );
    expect(ev).toEqual({
      event_id: 'e1',
      event_type: 'video_play',
      user_id: 'u',
      timestamp: 1739245640654,
      properties: { device_type: 'tv', content_id: 'm1', playback_position: 12.5 },
      context: { location: 'DE-BE', ip_address: '192.0.2.7' },
      campaign: 'x',
    });
    const v = validateEvent(ev, 1739245640654, { latenessHorizonMs: Infinity });
    expect(v.ok && v.record).toMatchObject({ device_type: 'tv', country: 'DE', content_id: 'm1', extra: { campaign: 'x' } });
  });

  it('leaves a cell that is not a number as text, so the contract rejects it as the collector would', () => {
    const v = validateEvent(toEvent({ event_id: 'e', event_type: 'click', user_id: 'u', timestamp: 'yesterday' }, true), Date.now());
    expect(v).toMatchObject({ ok: false, reason: 'schema_violation' });
  });

  it('passes typed Parquet values and nested structs through', () => {
    expect(toEvent({ event_id: 'e', timestamp: 5, properties: { device_type: 'tv' }, context: null }, false)).toEqual({ event_id: 'e', timestamp: 5, properties: { device_type: 'tv' } });
  });
});

describe('receivedAtOf', () => {
  const clock = 1_800_000_000_000;
  it('takes the event\'s own received_at (and removes it), else its sent_at, else the import\'s clock', () => {
    expect(receivedAtOf({ event_id: 'e', received_at: 1_700_000_000_000, sent_at: 1 }, clock)).toEqual({ event: { event_id: 'e', sent_at: 1 }, receivedAt: 1_700_000_000_000 });
    expect(receivedAtOf({ event_id: 'e', sent_at: 1_700_000_000_000 }, clock).receivedAt).toBe(1_700_000_000_000);
    expect(receivedAtOf({ event_id: 'e' }, clock).receivedAt).toBe(clock);
    expect(receivedAtOf(null, clock)).toEqual({ event: null, receivedAt: clock });
  });

  it('so a historical sent_at corrects nothing instead of moving the event to the import\'s time', () => {
    const { event, receivedAt } = receivedAtOf({ event_id: 'e', event_type: 'click', user_id: 'u', timestamp: 1_700_000_000_500, sent_at: 1_700_000_000_000 }, clock);
    const v = validateEvent(event, receivedAt, { latenessHorizonMs: Infinity });
    expect(v.ok && v.record.ts).toBe(1_700_000_000_500);
  });
});

describe('the import id and formats', () => {
  const file = (identity: string): InputFile => ({ name: '/data/a.ndjson', local: '/data/a.ndjson', format: 'ndjson', identity });
  it('is the same for the same files, another when a file changed', () => {
    expect(importIdOf([file('size 1 mtime 2')])).toBe(importIdOf([file('size 1 mtime 2')]));
    expect(importIdOf([file('size 1 mtime 2')])).not.toBe(importIdOf([file('size 1 mtime 3')]));
  });
  it('reads the format from the extension unless given', () => {
    expect(formatOf('x/a.JSONL')).toBe('ndjson');
    expect(formatOf('a.csv')).toBe('csv');
    expect(formatOf('a.txt')).toBeNull();
    expect(formatOf('a.txt', 'json')).toBe('json');
  });
});

describe('LakeIds', () => {
  it('counts an id once within the dedupe horizon, and again farther away (docs/metrics.md §2)', () => {
    const ids = new LakeIds({} as S3Client, 'b', 7 * 86_400_000, 'i-x-', '/tmp');
    const h = Date.UTC(2025, 1, 10, 5);
    ids.add('e1', h, 3);
    expect(ids.copyOf('e1', h + 7 * 86_400_000)).toEqual({ hourMs: h, ownSeq: 3 });
    expect(ids.copyOf('e1', h + 7 * 86_400_000 + 3_600_000)).toBeNull();
    expect(ids.copyOf('e2', h)).toBeNull();
  });
});
