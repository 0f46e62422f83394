import { describe, expect, it } from 'vitest';
import { bucketsIn, bucketStart, dayOf, decodeRecord, deriveCountry, EVENT_TYPES, hourOf, RejectedRecord, validateEvent, type EventRecord } from '../../common/contract';

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0);
const base = { event_id: 'evt_1', event_type: 'video_play', user_id: 'user_1', timestamp: NOW - 1000 };

describe('validateEvent', () => {
  it('accepts the METRICS.md example and derives its dimensions', () => {
    const r = validateEvent(
      {
        ...base,
        session_id: 'sess_a',
        schema_version: 1,
        properties: { content_id: 'movie_1', device_type: 'smart_tv', video_quality: '4k', playback_position: 0, duration_ms: 7200000 },
        context: { location: 'us-CA-SF', user_agent: 'Netflix/1.0', ip_address: '192.168.1.1', app_version: '8.41.0' },
      },
      NOW,
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.record).toMatchObject({
      event_id: 'evt_1', ts: NOW - 1000, device_type: 'smart_tv', country: 'US', app_version: '8.41.0',
      content_id: 'movie_1', received_at: NOW, session_id: 'sess_a', extra: null,
    });
  });

  it('defaults missing dimensions to unknown / null', () => {
    const r = validateEvent(base, NOW);
    expect(r.ok && r.record).toMatchObject({ device_type: 'unknown', country: 'unknown', app_version: 'unknown', content_id: null, schema_version: 1 });
  });

  it('keeps unknown extra fields (additive schema evolution)', () => {
    const r = validateEvent({ ...base, experiment: { arm: 'B' }, properties: { device_type: 'ios', new_field: 3 } }, NOW);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.record.extra).toEqual({ experiment: { arm: 'B' } });
    expect(r.record.properties).toEqual({ device_type: 'ios', new_field: 3 });
  });

  it.each([
    [null, 'not_an_object'],
    [[base], 'not_an_object'],
    ['evt', 'not_an_object'],
    [{ ...base, schema_version: 3 }, 'unknown_schema_version'],
    // Version 2 requires app_id and has no flat device_type.
    [{ ...base, schema_version: 2 }, 'schema_violation'],
    [{ ...base, schema_version: 2, app_id: 'tv-app', properties: { device: 'tv' } }, 'schema_violation'],
    [{ ...base, schema_version: '1' }, 'unknown_schema_version'],
    [{ ...base, event_id: undefined }, 'schema_violation'],
    [{ ...base, event_id: '' }, 'schema_violation'],
    [{ ...base, event_id: 'x'.repeat(129) }, 'schema_violation'],
    [{ ...base, user_id: 42 }, 'schema_violation'],
    [{ ...base, event_type: 'video_rewind' }, 'schema_violation'],
    [{ ...base, timestamp: 1.5 }, 'schema_violation'],
    [{ ...base, properties: { device_type: 7 } }, 'schema_violation'],
    [{ ...base, timestamp: Date.UTC(1999, 11, 31) }, 'timestamp_out_of_range'],
    [{ ...base, timestamp: NOW + 5 * 60_000 + 1 }, 'timestamp_out_of_range'],
  ])('rejects %j as %s', (input, reason) => {
    const r = validateEvent(input, NOW);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe(reason);
      expect(r.detail.length).toBeGreaterThan(5);
    }
  });

  it('derives the same dimensions from a version 2 event as from the version 1 event of the same facts (the upcaster)', () => {
    const v1 = { ...base, properties: { device_type: 'tv', content_id: 'c9' }, context: { location: 'de-BE', app_version: '3.1' } };
    const v2 = { ...base, schema_version: 2, app_id: 'tv-app', properties: { device: { type: 'tv', os: 'tizen', model: 'QE55' }, content_id: 'c9' }, context: v1.context };
    const a = validateEvent(v1, NOW);
    const b = validateEvent(v2, NOW);
    expect(a.ok && b.ok).toBe(true);
    if (!a.ok || !b.ok) return;
    const dims = (r: typeof a.record) => [r.device_type, r.country, r.app_version, r.content_id];
    expect(dims(b.record)).toEqual(dims(a.record));
    expect(dims(b.record)).toEqual(['tv', 'DE', '3.1', 'c9']);
    expect(b.record.app_id).toBe('tv-app');
    expect('app_id' in a.record).toBe(false);
    // app_id is a field of version 2; a version 1 event carrying it keeps it in extra.
    const old = validateEvent({ ...v1, app_id: 'x' }, NOW);
    expect(old.ok && old.record.extra).toEqual({ app_id: 'x' });
    // A version 2 event without a device type is `unknown`, like a version 1 event without device_type.
    const bare = validateEvent({ ...v2, properties: { device: { os: 'ios' } } }, NOW);
    expect(bare.ok && bare.record.device_type).toBe('unknown');
    const missing = validateEvent({ ...base, schema_version: 2 }, NOW);
    expect(!missing.ok && missing.detail).toBe('app_id is required');
  });

  it('names the broken field in the detail', () => {
    const r = validateEvent({ ...base, event_type: 'video_rewind' }, NOW);
    expect(!r.ok && r.detail).toMatch(/^event_type must be one of page_view/);
    const m = validateEvent({ ...base, user_id: undefined }, NOW);
    expect(!m.ok && m.detail).toBe('user_id is required');
  });

  it('accepts a timestamp exactly 5 minutes ahead and every listed event type', () => {
    expect(validateEvent({ ...base, timestamp: NOW + 5 * 60_000 }, NOW).ok).toBe(true);
    for (const t of EVENT_TYPES) expect(validateEvent({ ...base, event_type: t }, NOW).ok).toBe(true);
  });
});

describe('decodeRecord: one rule for both consumers of events.raw', () => {
  const v = validateEvent({ ...base, session_id: 's1', properties: { device_type: 'tv', content_id: 'c1' }, context: { location: 'FR' } }, NOW);
  if (!v.ok) throw new Error(v.detail);
  const record: EventRecord = v.record;
  const decode = (r: Record<string, unknown>) => decodeRecord(JSON.stringify(r));

  it('returns a collector record as written', () => {
    expect(decode({ ...record })).toEqual(record);
  });

  it('gives what another producer left out the contract\'s defaults, as the collector derives them', () => {
    const identity = { event_id: record.event_id, event_type: record.event_type, user_id: record.user_id, ts: record.ts };
    expect(decode(identity)).toEqual({
      ...identity, device_type: 'unknown', country: 'unknown', app_version: 'unknown', session_id: null, content_id: null,
      received_at: 0, schema_version: 1, properties: null, context: null, extra: null,
    });
    expect(decode({ ...record, device_type: '', country: '', session_id: 7, content_id: {}, device_ts: 'then' })).toMatchObject({
      device_type: 'unknown', country: 'unknown', session_id: null, content_id: null, device_ts: undefined,
    });
  });

  it.each([
    [{ ...record, event_id: '' }, 'schema_violation'],
    [{ ...record, user_id: undefined }, 'schema_violation'],
    [{ ...record, event_type: 'teleport' }, 'schema_violation'],
    [{ ...record, ts: -1 }, 'schema_violation'],
    [{ ...record, ts: 1.5 }, 'schema_violation'],
    [{ ...record, properties: 'tv' }, 'schema_violation'],
    [{ ...record, extra: [1] }, 'schema_violation'],
  ])('rejects %j as %s, naming the field', (input, reason) => {
    const d = decode(input);
    expect(d).toBeInstanceOf(RejectedRecord);
    expect(d).toMatchObject({ reason, detail: expect.stringMatching(/event_id|user_id|event_type|ts|properties|extra/) });
  });
});

describe('derived dimensions and buckets', () => {
  it.each([
    ['US-CA-SF', 'US'], ['br', 'BR'], ['gb-LND', 'GB'], ['USA-NY', 'unknown'], ['1A-x', 'unknown'], ['', 'unknown'], [undefined, 'unknown'], [12, 'unknown'],
  ])('country of %j is %s', (loc, country) => expect(deriveCountry(loc)).toBe(country));

  it('floors to the bucket in UTC', () => {
    const ts = Date.UTC(2026, 10, 20, 23, 59, 59, 999);
    expect(bucketStart(ts, 'minute')).toBe(Date.UTC(2026, 10, 20, 23, 59));
    expect(bucketStart(ts, 'hour')).toBe(Date.UTC(2026, 10, 20, 23));
    expect(bucketStart(ts, 'day')).toBe(Date.UTC(2026, 10, 20));
    expect(dayOf(ts)).toBe('2026-11-20');
    expect(hourOf(ts)).toBe('23');
  });

  it('lists the buckets that overlap [from, to), the first one starting before from', () => {
    const M = 60_000;
    expect(bucketsIn(90_000, 200_000, 'minute')).toEqual([M, 2 * M, 3 * M]);
    expect(bucketsIn(2 * M, 3 * M, 'minute')).toEqual([2 * M]);
    expect(bucketsIn(2 * M, 2 * M, 'minute')).toEqual([]);
    expect(bucketsIn(3 * M, 2 * M, 'minute')).toEqual([]);
  });
});
