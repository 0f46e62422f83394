/**
 * The lake writer's lines: rawLine's shortcut for records without unknown fields gives the
 * same characters as the reference (`extra` built as it was before the shortcut, copied
 * here), on the simulator's records, on records of other producers decoded by decodeRecord,
 * on hostile shapes and on seeded random mutations; and LineChunks holds exactly the bytes
 * of its lines.
 */
import { describe, expect, it } from 'vitest';
import { prng } from '../support/prng';
import { decodeRecord, RejectedRecord, validateEvent, type EventRecord } from '../../common/contract';
import { simulate } from '../../ingestion/simulator/generate';
import { LineChunks } from '../../batch-layer/lake-writer/buffers';
import { decodeMessage } from '../../batch-layer/lake-writer/decode';
import { flattenRaw, rawLine, type RawRow } from '../../batch-layer/lake-writer/parquet';

// The reference: extraJson before the shortcut, verbatim.
const KNOWN_PROPERTIES = new Set(['content_id', 'device_type', 'video_quality', 'playback_position', 'duration_ms', 'page', 'target']);
const KNOWN_CONTEXT = new Set(['location', 'user_agent', 'ip_address', 'app_version']);
function unknownKeys(obj: Record<string, unknown> | null, known: Set<string>): Record<string, unknown> | null {
  if (!obj) return null;
  let out: Record<string, unknown> | null = null;
  for (const [k, v] of Object.entries(obj)) if (!known.has(k)) (out ??= {})[k] = v;
  return out;
}
function referenceExtra(record: EventRecord): string | null {
  const extra: Record<string, unknown> = { ...(record.extra ?? {}) };
  const props = unknownKeys(record.properties, KNOWN_PROPERTIES);
  const ctx = unknownKeys(record.context, KNOWN_CONTEXT);
  if (props) extra.properties = props;
  if (ctx) extra.context = ctx;
  return Object.keys(extra).length === 0 ? null : JSON.stringify(extra);
}
/** The line as it was before extraJson's early return: the same columns, `extra` built the long way. */
function referenceLine(row: RawRow): string {
  return JSON.stringify({ ...flattenRaw(row), extra: referenceExtra(row.record) });
}

const NOW = Date.UTC(2024, 4, 1, 12, 30);
const same = (record: EventRecord, offset = '7') => expect(rawLine({ record, partition: 3, offset })).toBe(referenceLine({ record, partition: 3, offset }));

describe('rawLine', () => {
  it("equals the reference on the simulator's records, valid and invalid sends alike", () => {
    let n = 0;
    for (const send of simulate({ seed: 5, users: 200, startMs: NOW - 3_600_000, endMs: NOW })) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(send.line);
      } catch {
        continue;
      }
      const v = validateEvent(parsed, NOW);
      if (v.ok) same(v.record);
      // The same event as another producer's record on events.raw (no derived fields): decodeRecord's defaults.
      const foreign = decodeRecord(JSON.stringify({ ...(parsed as object), ts: NOW - 1000 }));
      if (!(foreign instanceof RejectedRecord)) same(foreign);
      n += 1;
    }
    expect(n).toBeGreaterThan(1000);
  });

  it('equals the reference on hostile shapes of known and unknown fields', () => {
    const base = { event_id: 'e', event_type: 'click', user_id: 'u', ts: NOW };
    const shapes: Record<string, unknown>[] = [
      {},
      { extra: {} },
      { extra: { a: 1 } },
      { extra: [] },
      { extra: [1, 2] },
      { extra: 'text' },
      { extra: 5 },
      { properties: {}, context: {} },
      { properties: { page: 'home', foo: null } },
      { properties: { ['__proto__']: { x: 1 } } },
      { properties: JSON.parse('{"__proto__": 1, "page": "p"}') },
      { properties: [1, 2] },
      { properties: 'str', context: 7 },
      { context: { location: 'de-BE', os: 'tvOS' }, extra: { context: 'clash' } },
      { properties: { playback_position: 'x', duration_ms: 1e308, video_quality: 4 } },
      { session_id: 5, content_id: { a: 1 }, schema_version: 1e21, received_at: -0 },
      { device_ts: 'x', sent_at: null, properties: { content_id: 'c', device_type: 'tv' } },
      { event_id: 'é"\\\u2028😀\ud800', user_id: '\n\t' },
    ];
    for (const shape of shapes) {
      const decoded = decodeRecord(JSON.stringify({ ...base, ...shape }));
      if (!(decoded instanceof RejectedRecord)) same(decoded);
      // Also as typed by hand, past decodeRecord's checks (the function takes any EventRecord).
      same({ ...base, ...shape } as unknown as EventRecord);
    }
    const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { page: 'p', odd: true });
    same({ ...base, properties: nullProto } as unknown as EventRecord);
    const inherited = Object.assign(Object.create({ inheritedKey: 1 }) as Record<string, unknown>, { page: 'p' });
    same({ ...base, properties: inherited, context: Object.create({ os: 'x' }) } as unknown as EventRecord);
  });

  it('equals the reference on 20,000 seeded random records', () => {
    const rnd = prng(1130);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    const values: unknown[] = [null, 'v', '', 0, -1.5, 1e21, true, [], {}, { n: [1, { k: 'v' }] }, 'ü😀'];
    const keys = ['content_id', 'device_type', 'video_quality', 'playback_position', 'duration_ms', 'page', 'target', 'location', 'user_agent', 'ip_address', 'app_version', 'foo', 'bar'];
    const topKeys = ['session_id', 'content_id', 'schema_version', 'received_at', 'device_type', 'country', 'app_version', 'device_ts', 'sent_at', 'zzz', 'timestamp'];
    const obj = () => Object.fromEntries(Array.from({ length: Math.floor(rnd() * 5) }, () => [pick(keys), pick(values)]));
    for (let i = 0; i < 20_000; i++) {
      const r: Record<string, unknown> = { event_id: `e${i}`, event_type: 'page_view', user_id: 'u', ts: NOW - i };
      for (let k = Math.floor(rnd() * 4); k > 0; k--) r[pick(topKeys)] = pick(values);
      if (rnd() < 0.7) r.properties = rnd() < 0.9 ? obj() : pick(values);
      if (rnd() < 0.7) r.context = rnd() < 0.9 ? obj() : pick(values);
      if (rnd() < 0.3) r.extra = rnd() < 0.8 ? obj() : pick(values);
      const decoded = decodeRecord(JSON.stringify(r));
      if (!(decoded instanceof RejectedRecord)) same(decoded, String(i));
    }
  });

  it('writes a schema_version 2 device to its columns, keeps the flat device_type and a device with other keys in extra', () => {
    const v2 = { event_id: 'e2', event_type: 'click', user_id: 'u', timestamp: NOW - 1000, schema_version: 2, app_id: 'web-app' };
    const line = (properties: unknown) => {
      const v = validateEvent({ ...v2, properties }, NOW);
      if (!v.ok) throw new Error(v.detail);
      return JSON.parse(rawLine({ record: v.record, partition: 0, offset: '1' })) as Record<string, unknown>;
    };
    expect(line({ device: { type: 'tv', os: 'tizen', model: 'QE55' }, page: '/home' })).toMatchObject({
      schema_version: 2, app_id: 'web-app', device_type: 'tv', device_os: 'tizen', device_model: 'QE55', page: '/home', extra: null,
    });
    // Not a field of version 2: kept, not read as the device type.
    expect(line({ device_type: 'tv' })).toMatchObject({ device_type: 'unknown', extra: '{"properties":{"device_type":"tv"}}' });
    expect(line({ device: { type: 'tv', vendor: 'acme' } })).toMatchObject({ device_type: 'tv', device_os: null, extra: '{"properties":{"device":{"type":"tv","vendor":"acme"}}}' });
    // The same keys under version 1 are unknown keys: extra, as before version 2 existed.
    const v1 = validateEvent({ ...v2, schema_version: 1, properties: { device: { type: 'tv' } } }, NOW);
    expect(v1.ok && JSON.parse(rawLine({ record: v1.record, partition: 0, offset: '1' }))).toMatchObject({
      app_id: null, device_type: 'unknown', device_os: null, extra: '{"app_id":"web-app","properties":{"device":{"type":"tv"}}}',
    });
  });

  // A record in the collector's canonical form takes the fast path instead (its own bytes; lake-canonical.test.ts).
  it('is the line decodeMessage buffers for a valid record not in canonical form', () => {
    const v = validateEvent({ event_id: 'e1', event_type: 'click', user_id: 'u', timestamp: NOW - 5, properties: { page: 'p', x: 1 } }, NOW);
    if (!v.ok) throw new Error(v.detail);
    const d = decodeMessage('events.raw', true, 3, { value: Buffer.from(JSON.stringify(v.record, null, 1)), offset: '7', timestamp: String(NOW) });
    expect(d.kind).toBe('raw');
    expect(d.head).toBeUndefined();
    expect(d.line).toBe(referenceLine({ record: v.record, partition: 3, offset: '7' }));
    const fast = decodeMessage('events.raw', true, 3, { value: Buffer.from(JSON.stringify(v.record)), offset: '7', timestamp: String(NOW) });
    expect(fast.head?.toString()).toBe(JSON.stringify(v.record).slice(0, -1));
    expect(fast.line).toBe(',"kafka_partition":3,"kafka_offset":7,"canonical_extra":"{\\"properties\\":{\\"x\\":1}}"}');
  });
});

describe('LineChunks', () => {
  it('holds exactly the UTF-8 bytes of its lines, each ended by a newline, across chunk boundaries', () => {
    const rnd = prng(7);
    const lines: string[] = [];
    const chunks = new LineChunks();
    let counted = 0;
    for (let i = 0; i < 3000; i++) {
      const line = i === 1500 ? 'x'.repeat(3 * 1024 * 1024) : `{"i":${i},"s":"${'é😀a\u2028'.repeat(Math.floor(rnd() * 200))}"}`;
      lines.push(line);
      counted += chunks.append(line);
    }
    const expected = Buffer.from(lines.map((l) => `${l}\n`).join(''), 'utf8');
    expect(chunks.length).toBe(3000);
    expect(chunks.bytes).toBe(expected.length);
    expect(counted).toBe(expected.length);
    expect(chunks.chunks().length).toBeGreaterThan(2);
    expect(Buffer.concat(chunks.chunks()).equals(expected)).toBe(true);
  });

  it('is empty before its first line', () => {
    const chunks = new LineChunks();
    expect(chunks.chunks()).toEqual([]);
    expect(chunks.bytes).toBe(0);
  });
});
