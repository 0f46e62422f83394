/**
 * The lake writer's fast path (canonical.ts): a record it takes gives the same Parquet as
 * decodeRecord's path, byte for byte, and the same event time; a record it leaves takes
 * decodeRecord's path. Over the collector's records, hand-written edge cases (unicode, escapes,
 * nulls, missing optional fields, extra properties, numbers at the edges, duplicate keys,
 * whitespace, bad UTF-8) and seeded random records and text mutations of them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prng } from '../support/prng';
import { decodeRecord, MAX_DATE_MS, RejectedRecord, validateEvent } from '../../common/contract';
import { simulate } from '../../ingestion/simulator/generate';
import { LineChunks } from '../../batch-layer/lake-writer/buffers';
import { canonicalExtra, canonicalTs } from '../../batch-layer/lake-writer/canonical';
import { decodedLine, decodeMessage } from '../../batch-layer/lake-writer/decode';
import { extraJson, writeParquetLines } from '../../batch-layer/lake-writer/parquet';

const NOW = Date.UTC(2024, 4, 1, 12, 30);
let dir: string;
let db: DuckDBInstance;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lake-canonical-'));
  db = await DuckDBInstance.create(':memory:');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The collector's records for the simulator's valid events, as their bytes on events.raw. */
function collectorRecords(seed: number, users: number): Buffer[] {
  const out: Buffer[] = [];
  for (const send of simulate({ seed, users, startMs: NOW - 3_600_000, endMs: NOW })) {
    if (send.kind !== 'valid') continue;
    const v = validateEvent(JSON.parse(send.line), NOW);
    if (v.ok) out.push(Buffer.from(JSON.stringify(v.record)));
  }
  return out;
}

let files = 0;
/**
 * Write the records twice, decodeRecord's path only and decodeMessage's (fast where it can), and
 * compare the two Parquet files byte for byte; both hold the rows of the records decodeRecord
 * takes, in order. Checks on the way that a record the fast path takes is one decodeRecord takes
 * as it is (same ts, nothing for `extra`). Returns how many took the fast path.
 */
async function sameParquet(values: Buffer[]): Promise<{ fast: number; rows: number }> {
  const slow = new LineChunks();
  const mixed = new LineChunks();
  let fast = 0;
  values.forEach((value, i) => {
    const offset = String(1000 + i);
    const record = decodeRecord(value);
    const ts = canonicalTs(value);
    if (record instanceof RejectedRecord) {
      expect(ts, `fast path took a record decodeRecord rejects: ${value.toString('latin1')}`).toBe(-1);
      return;
    }
    slow.append(decodedLine(record, 4, offset));
    const d = decodeMessage('events.raw', true, 4, { value, offset, timestamp: String(NOW) });
    expect(d.kind).toBe('raw');
    if (ts >= 0) {
      fast += 1;
      expect(ts).toBe(record.ts);
      expect(canonicalExtra()).toBe(extraJson(record));
      expect(d.head).toBeDefined();
    } else {
      expect(d.head).toBeUndefined();
    }
    mixed.append(d.line, d.head);
  });
  const a = path.join(dir, `slow-${files}.parquet`);
  const b = path.join(dir, `mixed-${files++}.parquet`);
  await writeParquetLines('raw', slow, a);
  await writeParquetLines('raw', mixed, b);
  const conn = await db.connect();
  try {
    const rows = async (file: string) => (await conn.runAndReadAll(`SELECT * FROM read_parquet('${file}')`)).getRowObjectsJson();
    const [ra, rb] = [await rows(a), await rows(b)];
    expect(rb).toEqual(ra);
    const schema = async (file: string) => (await conn.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('${file}')`)).getRowObjectsJson();
    expect(await schema(b)).toEqual(await schema(a));
  } finally {
    conn.closeSync();
  }
  expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
  return { fast, rows: slow.length };
}

const base = () =>
  ({
    event_id: 'e1',
    event_type: 'video_play',
    user_id: 'u1',
    session_id: 's1',
    ts: NOW - 5000,
    schema_version: 1,
    device_type: 'tv',
    country: 'DE',
    app_version: '2.1.0',
    content_id: 'c1',
    received_at: NOW,
    properties: { content_id: 'c1', device_type: 'tv', video_quality: '4k', playback_position: 12.5, duration_ms: 3000, page: '/home', target: 'play' },
    context: { location: 'DE-BE', user_agent: 'Mozilla/5.0 (X11)', ip_address: '10.0.0.1', app_version: '2.1.0' },
    extra: null,
  }) as Record<string, unknown>;
const bytes = (r: unknown) => Buffer.from(JSON.stringify(r));
const text = (s: string) => Buffer.from(s, 'utf8');
/** The base record's JSON with `from` replaced by `to` (first occurrence). */
const edit = (from: string, to: string) => {
  const s = JSON.stringify(base());
  if (!s.includes(from)) throw new Error(`no ${from}`);
  return text(s.replace(from, to));
};

describe('canonicalTs', () => {
  it("takes the collector's records, with their event time", () => {
    const records = collectorRecords(3, 300);
    let taken = 0;
    for (const value of records) {
      const ts = canonicalTs(value);
      if (ts >= 0) {
        taken += 1;
        expect(ts).toBe((decodeRecord(value) as { ts: number }).ts);
      }
    }
    expect(records.length).toBeGreaterThan(1000);
    expect(taken / records.length).toBeGreaterThan(0.99);
  });

  it('takes a record only as the collector writes it: edge cases', () => {
    const take = (v: Buffer) => expect(canonicalTs(v), v.toString()).toBeGreaterThanOrEqual(0);
    const leave = (v: Buffer) => expect(canonicalTs(v), v.toString()).toBe(-1);
    take(bytes(base()));
    take(bytes({ ...base(), session_id: null, content_id: null, properties: null, context: null }));
    take(bytes({ ...base(), properties: {}, context: {} }));
    take(bytes({ ...base(), ts: 0 }));
    take(bytes({ ...base(), ts: MAX_DATE_MS }));
    take(bytes({ ...base(), user_id: 'ü😀\u2028\u007f' }));
    // missing optional fields
    for (const k of ['session_id', 'content_id', 'properties', 'context', 'extra']) {
      const r = base();
      delete r[k];
      take(bytes(r));
    }
    take(bytes({ ...base(), device_ts: NOW - 9000, sent_at: NOW - 4000 }));
    take(bytes({ ...base(), device_ts: null }));
    // missing or empty fields decodeRecord fills in
    for (const k of ['event_id', 'event_type', 'user_id', 'ts', 'schema_version', 'device_type', 'country', 'app_version', 'received_at']) {
      const r = base();
      delete r[k];
      leave(bytes(r));
      leave(bytes({ ...base(), [k]: null }));
    }
    for (const k of ['event_id', 'user_id', 'device_type', 'country', 'app_version']) leave(bytes({ ...base(), [k]: '' }));
    leave(bytes({ ...base(), event_type: 'video_plays' }));
    leave(bytes({ ...base(), event_type: 'video_pla' }));
    // escapes, control characters, lone surrogates, bad UTF-8
    leave(bytes({ ...base(), user_id: 'a"b' }));
    leave(bytes({ ...base(), user_id: 'a\\b' }));
    leave(bytes({ ...base(), user_id: 'a\nb' }));
    leave(bytes({ ...base(), user_id: '\ud800' }));
    leave(edit('"u1"', '"\\u0075"'));
    leave(edit('"u1"', '"u\u0001"'));
    {
      const s = JSON.stringify(base());
      const at = s.indexOf('"u1"') + 2;
      leave(Buffer.concat([text(s.slice(0, at)), Buffer.from([0xff]), text(s.slice(at))]));
      leave(Buffer.concat([text(s.slice(0, at)), Buffer.from([0xed, 0xa0, 0x80]), text(s.slice(at))])); // a surrogate in UTF-8
    }
    // extra properties
    leave(bytes({ ...base(), zzz: 1 }));
    leave(bytes({ ...base(), video_quality: 'hd' }));
    leave(bytes({ ...base(), kafka_offset: 1 }));
    leave(bytes({ ...base(), extra: {} }));
    leave(bytes({ ...base(), extra: { a: 1 } }));
    // unknown keys of properties/context: their members are `extra`, when scalar and plainly named
    take(bytes({ ...base(), properties: { page: 'p', foo: 1, bar: 'ü', baz: true, qux: null, quux: false, n: 1e21 } }));
    take(bytes({ ...base(), context: { location: 'x', os: 'tvOS' } }));
    leave(bytes({ ...base(), properties: { foo: { a: 1 } } }));
    leave(bytes({ ...base(), properties: { foo: [1] } }));
    leave(bytes({ ...base(), properties: { foo: 'a"b' } }));
    leave(bytes({ ...base(), properties: { '1': 'x' } }));
    leave(bytes({ ...base(), properties: { _x: 'x' } }));
    leave(bytes({ ...base(), properties: { 'fo o': 'x' } }));
    leave(edit('"page"', '"__proto__"'));
    leave(edit('"page":', '"foo":1,"foo":'));
    {
      const { properties, context, ...rest } = base();
      leave(bytes({ ...rest, context: { ...(context as object), os: 'x' }, properties: { foo: 1 } })); // context before properties, both with unknown keys
      take(bytes({ ...rest, context: { os: 'x' }, properties }));
    }
    // wrong types
    leave(bytes({ ...base(), properties: [] }));
    leave(bytes({ ...base(), properties: 'p' }));
    leave(bytes({ ...base(), session_id: 5 }));
    leave(bytes({ ...base(), properties: { video_quality: 4 } }));
    leave(bytes({ ...base(), properties: { playback_position: '12' } }));
    leave(bytes({ ...base(), properties: { device_type: { a: 1 } } }));
    leave(bytes({ ...base(), schema_version: true }));
    // numbers at the edges
    for (const [from, to] of [
      [`"ts":${NOW - 5000}`, `"ts":${MAX_DATE_MS + 1}`],
      [`"ts":${NOW - 5000}`, '"ts":-1'],
      [`"ts":${NOW - 5000}`, '"ts":1.0'],
      [`"ts":${NOW - 5000}`, '"ts":1e3'],
      [`"ts":${NOW - 5000}`, '"ts":01'],
      [`"ts":${NOW - 5000}`, '"ts":-0'],
      [`"received_at":${NOW}`, '"received_at":9007199254740992'],
      [`"received_at":${NOW}`, '"received_at":12345678901234567'],
      ['"schema_version":1', '"schema_version":2147483648'],
      ['"playback_position":12.5', '"playback_position":12.50'],
      ['"playback_position":12.5', '"playback_position":1.25e1'],
      ['"playback_position":12.5', '"playback_position":1e400'],
      ['"playback_position":12.5', '"playback_position":-0'],
      ['"playback_position":12.5', '"playback_position":1E21'],
      ['"playback_position":12.5', '"playback_position":.5'],
      ['"playback_position":12.5', '"playback_position":0x10'],
    ]) leave(edit(from, to));
    take(edit(`"received_at":${NOW}`, '"received_at":9007199254740991'));
    // Only version 1 (and 0) takes the fast path: version 2 reads its device from an object, and any other version is a foreign record.
    take(edit('"schema_version":1', '"schema_version":0'));
    for (const v of [2, 3, 2147483647]) leave(edit('"schema_version":1', `"schema_version":${v}`));
    for (const n of [1e21, 5e-324, 1.7976931348623157e308, -1.5, 0, 0.1, 1e-7, 123456789012345680000]) take(edit('"playback_position":12.5', `"playback_position":${JSON.stringify(n)}`));
    // duplicate keys (JSON.parse keeps the last)
    leave(edit('"ts":', `"ts":1,"ts":`));
    leave(edit('"page":', '"page":"a","page":'));
    leave(edit('"extra":null', '"extra":null,"extra":null'));
    // whitespace, trailing bytes, truncation, not an object
    leave(edit('"ts":', '"ts": '));
    leave(text(`${JSON.stringify(base())}\n`));
    leave(text(` ${JSON.stringify(base())}`));
    leave(text(JSON.stringify(base()).slice(0, -1)));
    leave(text(JSON.stringify(base()).slice(0, 40)));
    leave(text('{}'));
    leave(text('[]'));
    leave(text(''));
  });

  it('gives the same Parquet as decodeRecord for the collector records and the edge cases', async () => {
    const edge: Buffer[] = [];
    const r = () => base();
    edge.push(bytes(r()), bytes({ ...r(), session_id: null, content_id: null, properties: null, context: null }), bytes({ ...r(), properties: {}, context: {} }));
    edge.push(bytes({ ...r(), ts: 0 }), bytes({ ...r(), ts: MAX_DATE_MS }), bytes({ ...r(), user_id: 'ü😀\u2028\u007f', event_id: "it's" }));
    edge.push(bytes({ ...r(), device_ts: NOW - 9000, sent_at: NOW - 4000 }), bytes({ ...r(), device_ts: null, sent_at: 'x' }));
    edge.push(bytes({ ...r(), properties: { video_quality: null, playback_position: null, page: null }, context: { location: null } }));
    for (const k of ['session_id', 'content_id', 'properties', 'context', 'extra', 'device_type', 'schema_version', 'received_at']) {
      const x = r();
      delete x[k];
      edge.push(bytes(x));
    }
    edge.push(bytes({ ...r(), user_id: 'a"b\\c\nd\ud800' }), edit('"u1"', '"\\u00fc"'), edit('"ts":', '"ts":1,"ts":'), edit('"page":', '"page":"a","page":'));
    edge.push(bytes({ ...r(), zzz: 1 }), bytes({ ...r(), extra: { a: 1 } }), bytes({ ...r(), properties: { page: 'p', foo: [1] } }));
    edge.push(bytes({ ...r(), properties: { page: 'p', foo: 1, bar: 'ü', baz: true, qux: null, quux: false, n: 1e21 }, context: { os: 'tvOS', location: 'x' } }));
    {
      const { properties, context, ...rest } = r();
      edge.push(bytes({ ...rest, context: { ...(context as object), os: 'x' }, properties }), bytes({ ...rest, context: { os: 'x' }, properties: { foo: 1 } }));
    }
    edge.push(bytes({ ...r(), properties: { video_quality: 4, playback_position: '12' } }), edit('"ts":', '"ts": '));
    for (const n of [1e21, 5e-324, 1.7976931348623157e308, -1.5, 0, 0.1, 1e-7, 123456789012345680000]) edge.push(edit('"playback_position":12.5', `"playback_position":${JSON.stringify(n)}`));
    edge.push(edit('"playback_position":12.5', '"playback_position":12.50'), edit('"playback_position":12.5', '"playback_position":1e400'));
    edge.push(edit(`"received_at":${NOW}`, '"received_at":9007199254740991'), edit('"schema_version":1', '"schema_version":2147483647'));
    const { fast, rows } = await sameParquet([...collectorRecords(4, 100), ...edge]);
    expect(fast).toBeGreaterThan(rows * 0.9);
    expect(fast).toBeLessThan(rows);
  });

  it('gives the same Parquet as decodeRecord for 20,000 seeded random records and text mutations', async () => {
    const rnd = prng(1201);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    const strings = ['', 'v', 'ü', '😀', 'a"b', 'a\\b', '\n', '\u2028', '\ud800', "it's", '\u0000', 'x'.repeat(300)];
    const numbers = [0, -0, 1, -1, 0.1, 1.5, 1e21, 1e-7, 5e-324, 2 ** 31, 2 ** 53, 2 ** 53 + 2, MAX_DATE_MS, MAX_DATE_MS + 1];
    const values: unknown[] = [null, true, [], {}, { a: 1 }, ...strings, ...numbers];
    const propKeys = ['content_id', 'device_type', 'video_quality', 'playback_position', 'duration_ms', 'page', 'target', 'foo'];
    const ctxKeys = ['location', 'user_agent', 'ip_address', 'app_version', 'os'];
    const topKeys = ['session_id', 'content_id', 'schema_version', 'received_at', 'device_type', 'country', 'app_version', 'device_ts', 'sent_at', 'extra', 'zzz', 'page'];
    const textEdits: Array<(s: string) => string> = [
      (s) => s.replace('":', '": '), // whitespace
      (s) => s.replace(/"ts":(\d+)/, (_m, d) => `"ts":${d},"ts":${Number(d) - 1}`), // duplicate
      (s) => s.replace(/"(page|location)":/, '"$1":"dup","$1":'),
      (s) => s.replace(/"ts":(\d+)/, '"ts":$1.0'),
      (s) => s.replace(/"user_id":"/, '"user_id":"\\u0041'),
      (s) => s.replace(/(\d)(,|\})/, '$1e0$2'),
      (s) => `${s} `,
      (s) => s.slice(0, Math.floor(s.length * rnd())),
    ];
    const batch: Buffer[] = [];
    let mutated = 0;
    for (let i = 0; i < 20_000; i++) {
      const x = base();
      x.event_id = `e${i}`;
      x.ts = NOW - i;
      for (let k = Math.floor(rnd() * 3); k > 0; k--) x[pick(topKeys)] = pick(values);
      for (let k = Math.floor(rnd() * 3); k > 0; k--) delete x[pick(topKeys)];
      if (rnd() < 0.3) x.properties = rnd() < 0.8 ? Object.fromEntries(propKeys.filter(() => rnd() < 0.5).map((k) => [k, rnd() < 0.5 ? pick(values) : 'ok'])) : pick(values);
      if (rnd() < 0.3) x.context = rnd() < 0.8 ? Object.fromEntries(ctxKeys.filter(() => rnd() < 0.5).map((k) => [k, rnd() < 0.5 ? pick(values) : 'ok'])) : pick(values);
      let s = JSON.stringify(x);
      if (rnd() < 0.2) {
        s = pick(textEdits)(s);
        mutated += 1;
      }
      batch.push(text(s));
    }
    const { fast, rows } = await sameParquet(batch);
    expect(mutated).toBeGreaterThan(3000);
    expect(fast).toBeGreaterThan(2000);
    expect(rows - fast).toBeGreaterThan(2000);
  });

  it('writes the records that used to fail their whole file: a lone surrogate, an integer its column cannot hold', async () => {
    const lone = bytes({ ...base(), user_id: 'a\ud800b', properties: { page: '\udc00\\ud800' } });
    const huge = bytes({ ...base(), schema_version: 1e21 });
    const wide = bytes({ ...base(), schema_version: 2 ** 31 });
    const lines = new LineChunks();
    [lone, huge, wide].forEach((value, i) => {
      const d = decodeMessage('events.raw', true, 0, { value, offset: String(i), timestamp: String(NOW) });
      expect(d.kind).toBe('raw');
      lines.append(d.line, d.head);
    });
    const file = path.join(dir, 'stallers.parquet');
    await writeParquetLines('raw', lines, file);
    const conn = await db.connect();
    try {
      const rows = (await conn.runAndReadAll(`SELECT user_id, page, schema_version FROM read_parquet('${file}') ORDER BY kafka_offset`)).getRowObjectsJson();
      expect(rows).toEqual([
        { user_id: 'a\ufffdb', page: '\ufffd\\ud800', schema_version: 1 },
        { user_id: 'u1', page: '/home', schema_version: null },
        { user_id: 'u1', page: '/home', schema_version: null },
      ]);
    } finally {
      conn.closeSync();
    }
  });
});
