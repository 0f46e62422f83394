/**
 * The lake writer's fast path: is a record of events.raw in the collector's canonical form, and
 * if so its event time, read from its bytes without parsing it into objects.
 *
 * A canonical record is one whose Parquet row DuckDB can take from the record's own bytes and
 * get what decodeRecord + flattenRaw would give (test/unit/lake-canonical.test.ts proves it):
 * - one JSON object without whitespace, every key once (JSON.parse keeps the last of duplicate
 *   keys, DuckDB another), every top-level key a field decodeRecord passes on unchanged (nothing
 *   that needs a default, `extra` null or absent); unknown keys of properties and context only
 *   with a string, number, boolean or null value, so that the `extra` column is their members'
 *   bytes as they are (canonicalExtra), and not named like an array index or `__proto__`
 *   (which JavaScript objects order or treat apart);
 * - strings without escapes or control characters, in valid UTF-8 (so V8's round trip through
 *   JSON.stringify writes the same bytes), integers as plain digits in their column's range (a
 *   BIGINT cast rejects numbers V8 accepts, and one such record would fail a whole COPY), other
 *   numbers exactly as JSON.stringify writes them;
 * - each value of the type of its column: a string column a string (or null where
 *   decodeRecord keeps null), a number column a number.
 * The collector's records (JSON.stringify of validateEvent's record) of schema_version 1 are
 * canonical unless a string holds a character JSON escapes; anything else (version 2 included)
 * takes decodeRecord's path.
 */
import { isUtf8 } from 'node:buffer';
import { EVENT_TYPES, MAX_DATE_MS } from '../../common/contract';
import { RAW_EVENT_COLUMNS, type RawEventColumn } from '../../common/lake';
import { CONTEXT_COLUMNS, PROPERTY_COLUMNS, RAW_FROM_CONTEXT, RAW_FROM_DEVICE, RAW_FROM_PROPERTIES, RAW_NOT_FROM_RECORD } from './parquet';

const enum Kind {
  /** A string (or null when the field allows it). */
  Str,
  /** Plain digits up to the field's max (or null when allowed). */
  Int,
  /** A number as JSON.stringify writes it (or null). */
  Num,
  /** properties / context: an object of known keys, or null. */
  Obj,
  /** `extra`: null only (anything else is in the extra column). */
  Null,
}

interface Field {
  kind: Kind;
  /** Bit in the required mask, 0 when optional. */
  bit: number;
  nullable: boolean;
  nonEmpty: boolean;
  max: number;
  oneOf: KeyTable | null;
  fields: KeyTable | null;
  /** The scan that last saw this key: a second time in one object is a duplicate. */
  seen: number;
}

/** Byte strings to look up by a hash of their bytes, checked byte for byte. */
class KeyTable {
  private readonly byHash = new Map<number, { bytes: Buffer; field: Field }>();

  constructor(entries: Array<[string, Field]>) {
    for (const [name, field] of entries) {
      const bytes = Buffer.from(name, 'latin1');
      const h = hash(bytes, 0, bytes.length);
      if (this.byHash.has(h)) throw new Error(`canonical: hash collision on ${name}`);
      this.byHash.set(h, { bytes, field });
    }
  }

  find(b: Buffer, start: number, end: number): Field | null {
    const e = this.byHash.get(hash(b, start, end));
    if (e === undefined || e.bytes.length !== end - start) return null;
    for (let k = 0; k < e.bytes.length; k++) if (e.bytes[k] !== b[start + k]) return null;
    return e.field;
  }
}

function hash(b: Buffer, start: number, end: number): number {
  let h = end - start;
  for (let k = start; k < end; k++) h = (Math.imul(h, 31) + b[k]) | 0;
  return h;
}

function field(kind: Kind, opts: Partial<Field> = {}): Field {
  return { kind, bit: 0, nullable: true, nonEmpty: false, max: Number.MAX_SAFE_INTEGER, oneOf: null, fields: null, seen: 0, ...opts };
}

const INT32_MAX = 2 ** 31 - 1;
let requiredBits = 0;
/** decodeRecord's rules beyond a column's type: required, or filled with a default other than null, so not nullable. */
const REQUIRED: Partial<Record<RawEventColumn, Partial<Field>>> = {
  event_id: { nonEmpty: true },
  event_type: { oneOf: new KeyTable(EVENT_TYPES.map((t) => [t, field(Kind.Null)])) },
  user_id: { nonEmpty: true },
  ts: { max: MAX_DATE_MS },
  // Version 2 reads its device from an object and its flat device_type is an unknown key: decodeRecord's path.
  schema_version: { max: 1 },
  device_type: { nonEmpty: true },
  country: { nonEmpty: true },
  app_version: { nonEmpty: true },
  received_at: {},
};
/** Optional, but dropped by decodeRecord unless an epoch-ms time. */
const OPTIONAL: Partial<Record<RawEventColumn, Partial<Field>>> = { device_ts: { max: MAX_DATE_MS }, sent_at: { max: MAX_DATE_MS } };

function columnField(column: RawEventColumn, rules: Partial<Field> = {}): Field {
  const type = RAW_EVENT_COLUMNS[column];
  const kind = type === 'VARCHAR' ? Kind.Str : type === 'DOUBLE' ? Kind.Num : Kind.Int;
  return field(kind, { max: type === 'INTEGER' ? INT32_MAX : Number.MAX_SAFE_INTEGER, ...rules });
}

/** Keys of properties/context: their columns, typed; the other known keys (read elsewhere or not at all) a string or null. */
function containerFields(columns: readonly RawEventColumn[], known: readonly string[]): KeyTable {
  return new KeyTable(known.map((k) => [k, (columns as readonly string[]).includes(k) ? columnField(k as RawEventColumn) : field(Kind.Str)]));
}

const TOP = new KeyTable([
  ...(Object.keys(RAW_EVENT_COLUMNS) as RawEventColumn[])
    .filter((c) => ![...RAW_FROM_PROPERTIES, ...RAW_FROM_CONTEXT, ...RAW_NOT_FROM_RECORD, ...Object.keys(RAW_FROM_DEVICE)].includes(c as never))
    .map((c): [string, Field] => {
      const req = REQUIRED[c];
      if (!req) return [c, columnField(c, OPTIONAL[c])];
      requiredBits += 1;
      return [c, columnField(c, { ...req, nullable: false, bit: 2 ** (requiredBits - 1) })];
    }),
  ['properties', field(Kind.Obj, { fields: containerFields(RAW_FROM_PROPERTIES, PROPERTY_COLUMNS) })],
  ['context', field(Kind.Obj, { fields: containerFields(RAW_FROM_CONTEXT, CONTEXT_COLUMNS) })],
  ['extra', field(Kind.Null)],
]);
const ALL_REQUIRED = 2 ** requiredBits - 1;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const ZERO = 0x30;
const NINE = 0x39;

// The scan's state: one record at a time, on the writer's one thread.
let b: Buffer = Buffer.alloc(0);
let n = 0;
let i = 0;
let nonAscii = false;
let scan = 0;

/**
 * The event time (epoch ms) of a record in the collector's canonical form, or -1 when the
 * record is not in it (take decodeRecord's path then).
 */
export function canonicalTs(value: Buffer): number {
  b = value;
  n = value.length;
  i = 0;
  nonAscii = false;
  scan += 1;
  unknown.length = 0;
  contextAt = -1;
  inContext = false;
  const ts = object(TOP, true);
  if (contextAt === -1) contextAt = unknown.length;
  if (ts === -2 || i !== n) return -1;
  if (nonAscii && !isUtf8(value)) return -1;
  return ts;
}

/**
 * An object of the table's keys at i. Returns -2 when not canonical; else, at the top level,
 * the value of ts (checked present with the other required fields), and 0 inside.
 */
function object(table: KeyTable, top: boolean): number {
  if (b[i] !== OPEN) return -2;
  i += 1;
  let required = 0;
  let ts = -1;
  if (b[i] === CLOSE) {
    i += 1;
    return top ? -2 : 0;
  }
  for (;;) {
    const keyStart = i;
    const f = key(table);
    if (f === null) {
      if (top || !unknownMember(keyStart)) return -2;
      const c = b[i++];
      if (c === CLOSE) break;
      if (c !== COMMA) return -2;
      continue;
    }
    if (f === MISSING || f.seen === scan) return -2;
    f.seen = scan;
    if (b[i] === 0x6e /* n */) {
      if (!f.nullable || !literalNull()) return -2;
    } else {
      switch (f.kind) {
        case Kind.Str: {
          const start = i;
          if (!string()) return -2;
          if (f.nonEmpty && i - start === 2) return -2;
          if (f.oneOf !== null && f.oneOf.find(b, start + 1, i - 1) === null) return -2;
          break;
        }
        case Kind.Int: {
          const v = int();
          if (v < 0 || v > f.max) return -2;
          if (top && f === TS) ts = v;
          break;
        }
        case Kind.Num:
          if (!number()) return -2;
          break;
        case Kind.Obj:
          inContext = f === CONTEXT;
          if (inContext) contextAt = unknown.length;
          if (object(f.fields!, false) === -2) return -2;
          inContext = false;
          break;
        default:
          return -2;
      }
    }
    required |= f.bit;
    const c = b[i++];
    if (c === CLOSE) break;
    if (c !== COMMA) return -2;
  }
  if (!top) return 0;
  return required === ALL_REQUIRED ? ts : -2;
}
const TS = TOP.find(Buffer.from('ts'), 0, 2)!;
const CONTEXT = TOP.find(Buffer.from('context'), 0, 7)!;

/** Returned by key() for what is not a key of plain ASCII letters, digits and `_` followed by its colon. */
const MISSING = field(Kind.Null);

/** A key (plain ASCII letters, digits, `_`) and its colon: its field in the table, null if not in it. */
function key(table: KeyTable): Field | null {
  if (b[i] !== QUOTE) return MISSING;
  const start = ++i;
  for (; i < n; i++) {
    const c = b[i];
    if (c === QUOTE) break;
    // [0-9A-Z_a-z]
    if (!((c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || (c >= 0x61 && c <= 0x7a))) return MISSING;
  }
  if (i >= n || b[i + 1] !== COLON) return MISSING;
  const f = table.find(b, start, i);
  i += 2;
  return f;
}

// The members of unknown keys seen in this scan's properties and context: [start, end) of `"key":value`.
const unknown: number[] = [];
/** Where the context's members start in `unknown` (the properties' come first). */
let contextAt = -1;
let inContext = false;

/**
 * An unknown key's member from keyStart (the key read, i at its value): a key that starts with a
 * letter, seen once in its object, with a scalar value written as JSON.stringify writes it.
 */
function unknownMember(keyStart: number): boolean {
  // Properties after context: their keys would have to come first in `extra`.
  if (!inContext && contextAt !== -1) return false;
  const first = b[keyStart + 1];
  if (!((first >= 0x41 && first <= 0x5a) || (first >= 0x61 && first <= 0x7a))) return false;
  const keyLen = i - keyStart;
  // A duplicate among this object's unknown keys (few: a linear look).
  for (let k = inContext ? contextAt : 0; k < unknown.length; k += 2) {
    if (unknown[k + 1] - unknown[k] > keyLen && b.compare(b, keyStart, i, unknown[k], unknown[k] + keyLen) === 0) return false;
  }
  const c = b[i];
  if (c === QUOTE) {
    if (!string()) return false;
  } else if (c === 0x74 /* t */) {
    if (b[i + 1] !== 0x72 || b[i + 2] !== 0x75 || b[i + 3] !== 0x65) return false;
    i += 4;
  } else if (c === 0x66 /* f */) {
    if (b[i + 1] !== 0x61 || b[i + 2] !== 0x6c || b[i + 3] !== 0x73 || b[i + 4] !== 0x65) return false;
    i += 5;
  } else if (c === 0x6e /* n */) {
    if (!literalNull()) return false;
  } else if (!number()) return false;
  unknown.push(keyStart, i);
  return true;
}

/**
 * The `extra` column of the record canonicalTs last took (extraJson's text: unknown keys of
 * properties, then of context), or null when it has none.
 */
export function canonicalExtra(): string | null {
  if (unknown.length === 0) return null;
  const part = (from: number, to: number) => {
    const members: string[] = [];
    for (let k = from; k < to; k += 2) members.push(b.toString('utf8', unknown[k], unknown[k + 1]));
    return `{${members.join(',')}}`;
  };
  const props = contextAt > 0 ? part(0, contextAt) : null;
  const ctx = contextAt < unknown.length ? part(contextAt, unknown.length) : null;
  return `{${props === null ? '' : `"properties":${props}`}${props !== null && ctx !== null ? ',' : ''}${ctx === null ? '' : `"context":${ctx}`}}`;
}

/** A string without escapes or control characters. */
function string(): boolean {
  if (b[i] !== QUOTE) return false;
  for (i += 1; i < n; i++) {
    const c = b[i];
    if (c === QUOTE) {
      i += 1;
      return true;
    }
    if (c === BACKSLASH || c < 0x20) return false;
    if (c >= 0x80) nonAscii = true;
  }
  return false;
}

/** Plain digits without a leading zero, at most 16 (below 2^53, so exact); -1 when not. */
function int(): number {
  const start = i;
  let v = 0;
  for (; i < n; i++) {
    const c = b[i];
    if (c < ZERO || c > NINE) break;
    v = v * 10 + (c - ZERO);
  }
  const len = i - start;
  if (len === 0 || len > 16 || (len > 1 && b[start] === ZERO)) return -1;
  return v;
}

/** A finite number written exactly as JSON.stringify writes it. */
function number(): boolean {
  const start = i;
  for (; i < n; i++) {
    const c = b[i];
    // [0-9.eE+-]
    if (!((c >= ZERO && c <= NINE) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b || c === 0x2d)) break;
  }
  if (i === start) return false;
  const text = b.toString('latin1', start, i);
  const v = Number(text);
  return Number.isFinite(v) && String(v) === text;
}

function literalNull(): boolean {
  if (b[i + 1] !== 0x75 || b[i + 2] !== 0x6c || b[i + 3] !== 0x6c) return false;
  i += 4;
  return true;
}
