/**
 * The inputs of an import: which files, their identity (the import id derives from it), and
 * their rows in order, in chunks, from any row on (a resumed import skips what its checkpoint
 * says is done). NDJSON and JSON go through the collector's own body parsers, so a line that
 * is not JSON is rejected with the collector's words; CSV and Parquet are read by DuckDB and
 * each row becomes the event object the collector would have been sent.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import type { S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance } from '@duckdb/node-api';
import { eventSchemaV1 } from '../../common/contract';
import { listObjects, stageObjects } from '../../common/lake-io';
import { BodyParseError, parseJsonBody, parseNdjsonBody } from '../collector/parse';

export const FORMATS = ['ndjson', 'json', 'csv', 'parquet'] as const;
export type Format = (typeof FORMATS)[number];

const EXTENSIONS: Record<string, Format> = {
  '.ndjson': 'ndjson',
  '.jsonl': 'ndjson',
  '.json': 'json',
  '.csv': 'csv',
  '.parquet': 'parquet',
};

/** One input file: where it is read from, and what identifies its content. */
export interface InputFile {
  /** As the operator named it (a path, or s3://bucket/key). */
  name: string;
  /** Local path to read (an S3 object is staged first). */
  local: string;
  format: Format;
  /** Size and mtime of a local file, ETag of an object: a changed file is another import. */
  identity: string;
}

/** One row of an input: the event object (or why its text is not one) and its original text. */
export interface InputRow {
  parsed: unknown;
  parseError?: string;
  /** The text a dead letter carries: the line (NDJSON), the element (JSON), the row as the event it stands for (CSV, Parquet). */
  raw: string;
  /** Where it stood: `file:line` or `file:row`. */
  where: string;
}

export class InputError extends Error {
  override name = 'InputError';
}

export function formatOf(file: string, given?: Format): Format | null {
  return given ?? EXTENSIONS[path.extname(file).toLowerCase()] ?? null;
}

/** The files of a path, a directory (recursively, by name) or an S3 prefix (staged into `scratch`). */
export async function listInputs(source: string, given: Format | undefined, s3: S3Client, scratch: string): Promise<InputFile[]> {
  const s3m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(source);
  if (s3m) {
    const [, bucket, prefix] = s3m;
    const objects = (await listObjects(s3, bucket, prefix)).filter((o) => formatOf(o.key, given) !== null).sort((a, b) => a.key.localeCompare(b.key));
    if (objects.length === 0) throw new InputError(`no importable objects under ${source} (extensions: ${Object.keys(EXTENSIONS).join(' ')}, or give --format)`);
    const files = await stageObjects(s3, bucket, objects.map((o) => o.key), path.join(scratch, 'input'));
    return objects.map((o, i) => ({ name: `s3://${bucket}/${o.key}`, local: files[i], format: formatOf(o.key, given)!, identity: `etag ${o.etag}` }));
  }
  const stat = await fsp.stat(source).catch(() => null);
  if (!stat) throw new InputError(`no such file or directory: ${source}`);
  const paths = stat.isDirectory()
    ? (await fsp.readdir(source, { recursive: true })).map((p) => path.join(source, String(p))).filter((p) => fs.statSync(p).isFile() && formatOf(p, given) !== null).sort()
    : [source];
  if (paths.length === 0) throw new InputError(`no importable files in ${source} (extensions: ${Object.keys(EXTENSIONS).join(' ')}, or give --format)`);
  return paths.map((p) => {
    const format = formatOf(p, given);
    if (format === null) throw new InputError(`cannot tell the format of ${p} from its extension: give --format ${FORMATS.join('|')}`);
    const s = fs.statSync(p);
    return { name: path.resolve(p), local: p, format, identity: `size ${s.size} mtime ${s.mtimeMs}` };
  });
}

/** The import id: a digest of what is imported, so the same command over the same files resumes the same import. */
export function importIdOf(files: readonly InputFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.name}\n${f.format}\n${f.identity}\n`);
  return h.digest('hex').slice(0, 16);
}

/** Rows of a file (non-blank lines of NDJSON), for the progress bar's total. */
export async function countRows(file: InputFile): Promise<number> {
  if (file.format === 'ndjson') {
    let n = 0;
    for await (const line of readline.createInterface({ input: fs.createReadStream(file.local), crlfDelay: Infinity })) if (line.trim() !== '') n++;
    return n;
  }
  if (file.format === 'json') return jsonRows(file).length;
  return withDuck(async (conn) => {
    const r = await conn.runAndReadAll(`SELECT count(*)::DOUBLE AS n FROM ${duckReader(file)}`);
    return Number(r.getRowObjectsJS()[0].n);
  });
}

/** The rows of a file from row `skip` on, in chunks of `size`. */
export async function* readChunks(file: InputFile, skip: number, size: number): AsyncGenerator<InputRow[]> {
  if (file.format === 'ndjson') yield* ndjsonChunks(file, skip, size);
  else if (file.format === 'json') {
    const rows = jsonRows(file);
    for (let i = skip; i < rows.length; i += size) yield rows.slice(i, i + size);
  } else yield* duckChunks(file, skip, size);
}

async function* ndjsonChunks(file: InputFile, skip: number, size: number): AsyncGenerator<InputRow[]> {
  let row = 0;
  let lineNo = 0;
  let lines: string[] = [];
  let numbers: number[] = [];
  const flush = (): InputRow[] => {
    // The collector's NDJSON parser: the same rejection text for a line that is not JSON.
    const body = parseNdjsonBody(lines.join('\n'), Infinity);
    const out = body.items.map((item, i) => ({ ...item, raw: body.rawOf(i), where: `${file.name}:${numbers[i]}` }));
    lines = [];
    numbers = [];
    return out;
  };
  for await (const line of readline.createInterface({ input: fs.createReadStream(file.local), crlfDelay: Infinity })) {
    lineNo++;
    if (line.trim() === '') continue;
    if (row++ < skip) continue;
    lines.push(line);
    numbers.push(lineNo);
    if (lines.length === size) yield flush();
  }
  if (lines.length > 0) yield flush();
}

/** A JSON file is one event or an array of them, as a collector's JSON body; one that does not parse is one malformed row. */
function jsonRows(file: InputFile): InputRow[] {
  const text = fs.readFileSync(file.local, 'utf8');
  try {
    const body = parseJsonBody(text, Infinity);
    return body.items.map((item, i) => ({ ...item, raw: body.rawOf(i), where: `${file.name}:[${i}]` }));
  } catch (err) {
    if (!(err instanceof BodyParseError)) throw err;
    return [{ parsed: undefined, parseError: err.message, raw: text, where: file.name }];
  }
}

function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** CSV as text (the contract's types are applied by toEvent, as JSON would carry them); short rows padded with NULLs. */
function duckReader(file: InputFile): string {
  return file.format === 'csv'
    ? `read_csv(${sqlString(file.local)}, header = true, all_varchar = true, null_padding = true)`
    : `read_parquet(${sqlString(file.local)})`;
}

async function withDuck<T>(fn: (conn: Awaited<ReturnType<DuckDBInstance['connect']>>) => Promise<T>): Promise<T> {
  const db = await DuckDBInstance.create(':memory:', { threads: '1' });
  const conn = await db.connect();
  try {
    return await fn(conn);
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

async function* duckChunks(file: InputFile, skip: number, size: number): AsyncGenerator<InputRow[]> {
  const db = await DuckDBInstance.create(':memory:', { threads: '1' });
  const conn = await db.connect();
  try {
    // to_json keeps Parquet's nested structs and numbers as JSON has them; insertion order is the file's.
    const result = await conn.stream(`SELECT to_json(t)::VARCHAR AS j FROM ${duckReader(file)} t OFFSET ${skip}`);
    let row = skip;
    let out: InputRow[] = [];
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      for (const [j] of chunk.getRows()) {
        row++;
        const parsed = toEvent(JSON.parse(String(j)) as Record<string, unknown>, file.format === 'csv');
        // No JSON was sent: a dead letter carries the event as the collector would have been sent it, so `dlq replay` can resend it.
        out.push({ parsed, raw: JSON.stringify(parsed), where: `${file.name}:row ${row}` });
        if (out.length === size) {
          yield out;
          out = [];
        }
      }
    }
    if (out.length > 0) yield out;
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

type JsonType = string | readonly string[];
/** The contract's own field lists and types (eventSchemaV1): nobody re-declares them. */
const TOP_FIELDS: Record<string, { type: JsonType }> = eventSchemaV1.properties;
const PROPERTY_FIELDS: Record<string, { type: JsonType }> = eventSchemaV1.properties.properties.properties;
const CONTEXT_FIELDS: Record<string, { type: JsonType }> = eventSchemaV1.properties.context.properties;
/** Not a contract field but read by the import: when the event was first received (see importEvents). */
const NUMERIC_EXTRA = new Set(['received_at']);

function typed(value: unknown, type: JsonType | undefined, csv: boolean): unknown {
  if (!csv || typeof value !== 'string') return value;
  const types = typeof type === 'string' ? [type] : (type ?? []);
  // A CSV cell is text; where the contract wants a number, a numeric cell is that number and anything else stays text (and fails validation).
  if ((types.includes('integer') || types.includes('number')) && /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(value.trim())) return Number(value);
  // A properties or context cell holding a JSON object is that object.
  if (types.includes('object') && value.trim().startsWith('{')) {
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value;
    }
  }
  return value;
}

/**
 * A flat row (CSV, Parquet) as the event the collector would be sent: `properties.x` and
 * `context.x` columns (or a field the contract knows under properties or context, by its
 * bare name) nest; an empty cell is an absent field; nested columns pass through.
 */
export function toEvent(row: Record<string, unknown>, csv: boolean): Record<string, unknown> {
  const ev: Record<string, unknown> = {};
  const into = (obj: 'properties' | 'context', key: string, value: unknown, fields: Record<string, { type: JsonType }>) => {
    const target = ((ev[obj] as Record<string, unknown> | undefined) ??= {});
    target[key] = typed(value, fields[key]?.type, csv);
  };
  for (const [col, value] of Object.entries(row)) {
    if (value === null || value === '') continue;
    const dot = /^(properties|context)\.(.+)$/.exec(col);
    if (dot) into(dot[1] as 'properties' | 'context', dot[2], value, dot[1] === 'properties' ? PROPERTY_FIELDS : CONTEXT_FIELDS);
    else if (col in TOP_FIELDS) ev[col] = typed(value, TOP_FIELDS[col].type, csv);
    else if (col in PROPERTY_FIELDS) into('properties', col, value, PROPERTY_FIELDS);
    else if (col in CONTEXT_FIELDS) into('context', col, value, CONTEXT_FIELDS);
    else ev[col] = NUMERIC_EXTRA.has(col) ? typed(value, 'integer', csv) : value;
  }
  return ev;
}
