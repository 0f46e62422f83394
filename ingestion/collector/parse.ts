/**
 * Turning a request body into events while keeping each event's original text,
 * which the dead-letter topic must carry byte for byte.
 */

/** One event of a request: parsed, or the reason its text did not parse. */
export interface BodyItem {
  parsed: unknown;
  /** Set when this item's text is not JSON (NDJSON lines only). */
  parseError?: string;
}

export interface ParsedBody {
  items: BodyItem[];
  /** The original text of item i (computed lazily: only rejected events need it). */
  rawOf(i: number): string;
}

export class BodyParseError extends Error {
  override name = 'BodyParseError';
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
    readonly position: number,
  ) {
    super(message);
  }
}

export class TooManyEventsError extends Error {
  override name = 'TooManyEventsError';
  constructor(readonly count: number) {
    super(`batch of ${count} events`);
  }
}

/** Line and column (1-based) of a character offset. */
export function locate(text: string, position: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < position; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: position - lineStart + 1 };
}

class SyntaxAt extends Error {
  constructor(
    readonly reason: string,
    readonly position: number,
  ) {
    super(reason);
  }
}

/**
 * Where and why a text is not JSON. V8's messages name a position only for some
 * errors (and echo the input for others), so the error path re-reads the text
 * with this small recursive-descent checker; the happy path never runs it.
 */
export function jsonSyntaxError(text: string): { reason: string; position: number } | null {
  const n = text.length;
  let i = 0;
  const fail = (reason: string): never => {
    throw new SyntaxAt(i >= n ? 'unexpected end of input' : reason, Math.min(i, n));
  };
  const ws = () => {
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = text.charCodeAt(++i));
  };
  const string = () => {
    i++; // opening quote
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) return void i++;
      if (c < 0x20) fail('control character in string');
      if (c === 0x5c) {
        i++;
        const e = text[i];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail('bad \\u escape in string');
          i += 5;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
        else fail('bad escape in string');
      } else i++;
    }
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a double-quoted property name');
        string();
        ws();
        if (text[i] !== ':') fail("expected ':' after a property name");
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail("expected ',' or '}' after a property value");
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail("expected ',' or ']' after an array element");
      }
    }
    if (c === '"') return string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (!m || m[0] === '-') fail('bad number');
      i += m![0].length;
      return;
    }
    for (const lit of ['true', 'false', 'null']) {
      if (text.startsWith(lit, i)) return void (i += lit.length);
    }
    fail(`unexpected character ${JSON.stringify(c)}`);
  };
  try {
    value();
    ws();
    if (i < n) fail('unexpected data after the JSON value');
    return null;
  } catch (err) {
    if (err instanceof SyntaxAt) return { reason: err.reason, position: err.position };
    // Nesting deep enough to exhaust the stack: no position to offer.
    return { reason: 'nesting too deep', position: 0 };
  }
}

function parseWhole(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const where = jsonSyntaxError(text) ?? { reason: (err as Error).message.slice(0, 200), position: 0 };
    const { line, column } = locate(text, where.position);
    throw new BodyParseError(`body is not valid JSON: ${where.reason} at line ${line} column ${column} (position ${where.position})`, line, column, where.position);
  }
}

/**
 * Offsets [start, end) of the top-level elements of a JSON array text that is
 * known to be valid (JSON.parse accepted it).
 */
export function arrayElementSpans(text: string): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  let i = text.indexOf('[') + 1;
  const n = text.length;
  const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
  while (i < n) {
    while (i < n && isSpace(text.charCodeAt(i))) i++;
    if (text.charCodeAt(i) === 0x5d /* ] */) break;
    const start = i;
    let depth = 0;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x22 /* " */) {
        for (i++; i < n; i++) {
          const d = text.charCodeAt(i);
          if (d === 0x5c /* \ */) i++;
          else if (d === 0x22) break;
        }
      } else if (c === 0x7b || c === 0x5b) depth++;
      else if (c === 0x7d || c === 0x5d) {
        if (depth === 0) break; // the array's own closing bracket
        depth--;
      } else if (c === 0x2c /* , */ && depth === 0) break;
    }
    let end = i;
    while (end > start && isSpace(text.charCodeAt(end - 1))) end--;
    spans.push([start, end]);
    if (text.charCodeAt(i) === 0x2c) i++;
    else break;
  }
  return spans;
}

/** A JSON body: one event, or an array of events. A body that does not parse throws BodyParseError. */
export function parseJsonBody(text: string, maxEvents: number): ParsedBody {
  if (text.trim() === '') throw new BodyParseError('body is empty: send one JSON event, a JSON array of events, or NDJSON', 1, 1, 0);
  const value = parseWhole(text);
  if (!Array.isArray(value)) return { items: [{ parsed: value }], rawOf: () => text.trim() };
  if (value.length > maxEvents) throw new TooManyEventsError(value.length);
  let spans: Array<[number, number]> | undefined;
  return {
    items: value.map((parsed) => ({ parsed })),
    rawOf(i) {
      spans ??= arrayElementSpans(text);
      const s = spans[i];
      return s ? text.slice(s[0], s[1]) : JSON.stringify(value[i]);
    },
  };
}

/** NDJSON: one event per line; blank lines are skipped; a line that does not parse is rejected alone. */
export function parseNdjsonBody(text: string, maxEvents: number): ParsedBody {
  const lines: string[] = [];
  let start = 0;
  while (start <= text.length) {
    let nl = text.indexOf('\n', start);
    if (nl === -1) nl = text.length;
    let end = nl;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    const line = text.slice(start, end);
    if (line.trim() !== '') {
      if (lines.length === maxEvents) throw new TooManyEventsError(countLines(text));
      lines.push(line);
    }
    start = nl + 1;
  }
  const items: BodyItem[] = lines.map((line) => {
    try {
      return { parsed: JSON.parse(line) };
    } catch (err) {
      const where = jsonSyntaxError(line) ?? { reason: (err as Error).message.slice(0, 200), position: 0 };
      return { parsed: undefined, parseError: `line is not valid JSON: ${where.reason} at column ${where.position + 1}` };
    }
  });
  return { items, rawOf: (i) => lines[i] };
}

function countLines(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.trim() !== '') n++;
  return n;
}

/**
 * RFC 7464 JSON text sequences (`application/json-seq`): every record starts with
 * the record separator 0x1E and is one JSON text (usually followed by LF). Like
 * NDJSON, a record that does not parse is rejected alone; text before the first
 * separator is not a record and is rejected as such.
 */
export function parseJsonSeqBody(text: string, maxEvents: number): ParsedBody {
  const records: string[] = [];
  const parts = text.split('\x1e');
  const head = parts[0].trim();
  if (head !== '') records.push(parts[0]);
  for (let i = 1; i < parts.length; i++) {
    if (parts[i].trim() === '') continue;
    records.push(parts[i]);
  }
  if (records.length > maxEvents) throw new TooManyEventsError(records.length);
  const items: BodyItem[] = records.map((rec, i) => {
    if (i === 0 && head !== '') return { parsed: undefined, parseError: 'text before the first record separator (0x1E): every JSON text sequence record must start with it' };
    try {
      return { parsed: JSON.parse(rec) };
    } catch (err) {
      const where = jsonSyntaxError(rec.trim()) ?? { reason: (err as Error).message.slice(0, 200), position: 0 };
      return { parsed: undefined, parseError: `record is not valid JSON: ${where.reason} at column ${where.position + 1}` };
    }
  });
  return { items, rawOf: (i) => records[i].trim() };
}
