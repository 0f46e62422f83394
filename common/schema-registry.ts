/**
 * The schema registry: every published event schema and the raw lake's columns, as files in
 * `schemas/` (after Snowplow's Iglu, with SchemaVer MODEL-REVISION-ADDITION), and the check that
 * refuses a change that would break a reader.
 *
 * - A published schema file never changes. `schema_version` in an event is the MODEL: a new
 *   optional field is an ADDITION (a new file of the same MODEL, e.g. 1-0-1, that accepts every
 *   event the previous one did); anything else — a removed or newly required field, a changed type,
 *   a tighter limit — is a new MODEL with its own schema_version and an upcaster to the v1 view
 *   (common/contract.ts), so the dimensions of old and new events are derived one way.
 * - The raw lake only gains columns (appended, never dropped or retyped): objects written
 *   before a column existed read it as NULL (`union_by_name`, rawColumnsSelect).
 */
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { SCHEMA_VERSIONS } from './contract';
import { REPO_ROOT } from './config';
import { RAW_EVENT_COLUMNS } from './lake';

export const SCHEMAS_DIR = path.join(REPO_ROOT, 'schemas');
const EVENT_DIR = 'event';
const RAW_COLUMNS_FILE = path.join('lake', 'raw-events.columns.json');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Schema = { [k: string]: Json };

/** SchemaVer: MODEL-REVISION-ADDITION. */
export function parseSchemaVer(v: string): [number, number, number] | null {
  const m = /^(\d+)-(\d+)-(\d+)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

function compareSchemaVer(a: string, b: string): number {
  const x = parseSchemaVer(a)!;
  const y = parseSchemaVer(b)!;
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
}

/** The JSON a schema is published as (what `JSON.stringify` of the contract's constant gives). */
export function asJson(schema: unknown): Schema {
  return JSON.parse(JSON.stringify(schema)) as Schema;
}

export interface Compatibility {
  /** `identical`; `addition`: every event valid before is valid after; `breaking`: some valid event is refused or read differently. */
  kind: 'identical' | 'addition' | 'breaking';
  changes: string[];
}

const types = (s: Schema): string[] => (s.type === undefined ? [] : Array.isArray(s.type) ? (s.type as string[]) : [s.type as string]);
const LIMITS_UP = ['maxLength', 'maximum', 'maxItems'] as const;
const LIMITS_DOWN = ['minLength', 'minimum', 'minItems'] as const;
const KNOWN_KEYWORDS = new Set(['$id', 'type', 'properties', 'required', 'enum', 'const', ...LIMITS_UP, ...LIMITS_DOWN]);

/**
 * What changing `before` into `after` does to the events they accept, for the keywords the
 * contract uses (type, properties, required, enum, const, length and range limits). Every
 * object in the contract allows unknown properties, so a new optional property is an ADDITION
 * (it was accepted before as an unknown one only when its values are what it now allows: that
 * is the one leniency an ADDITION keeps, as SchemaVer does). A keyword outside that list is
 * compared as a whole: any difference is breaking.
 */
export function compatibility(before: Schema, after: Schema, at = ''): Compatibility {
  const changes: string[] = [];
  let breaking = false;
  const where = at === '' ? 'event' : at;
  const brk = (msg: string) => {
    breaking = true;
    changes.push(`${where}: ${msg}`);
  };
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (key === '$id' || key === 'properties' || key === 'required') continue;
    if (KNOWN_KEYWORDS.has(key)) continue;
    if (!isDeepStrictEqual(before[key], after[key])) brk(`${key} changed`);
  }
  const tb = types(before);
  const ta = types(after);
  for (const t of tb) if (!ta.includes(t) && !(t === 'integer' && ta.includes('number'))) brk(`type ${t} no longer allowed`);
  for (const t of ta) if (!tb.includes(t)) changes.push(`${where}: type ${t} now allowed`);
  if (!isDeepStrictEqual(before.const, after.const)) {
    if (after.const !== undefined) brk(`const ${JSON.stringify(before.const)} → ${JSON.stringify(after.const)}`);
    else changes.push(`${where}: const removed`);
  }
  if (before.enum !== undefined || after.enum !== undefined) {
    const eb = (before.enum ?? null) as Json[] | null;
    const ea = (after.enum ?? null) as Json[] | null;
    if (ea !== null && (eb === null || eb.some((v) => !ea.some((w) => isDeepStrictEqual(v, w))))) brk('enum lost values');
    else if (!isDeepStrictEqual(eb, ea)) changes.push(`${where}: enum gained values`);
  }
  for (const k of LIMITS_UP) {
    const b = before[k] as number | undefined;
    const a = after[k] as number | undefined;
    if (a !== undefined && (b === undefined || a < b)) brk(`${k} ${b ?? 'none'} → ${a}`);
    else if (a !== b) changes.push(`${where}: ${k} ${b} → ${a ?? 'none'}`);
  }
  for (const k of LIMITS_DOWN) {
    const b = before[k] as number | undefined;
    const a = after[k] as number | undefined;
    if (a !== undefined && (b === undefined || a > b)) brk(`${k} ${b ?? 'none'} → ${a}`);
    else if (a !== b) changes.push(`${where}: ${k} ${b} → ${a ?? 'none'}`);
  }
  const rb = new Set((before.required ?? []) as string[]);
  for (const r of (after.required ?? []) as string[]) if (!rb.has(r)) brk(`${r} is now required`);
  const pb = (before.properties ?? {}) as Record<string, Schema>;
  const pa = (after.properties ?? {}) as Record<string, Schema>;
  for (const name of Object.keys(pb)) {
    const child = at === '' ? name : `${at}.${name}`;
    if (!(name in pa)) {
      brk(`${name} removed`);
      continue;
    }
    const c = compatibility(pb[name], pa[name], child);
    if (c.kind === 'breaking') breaking = true;
    changes.push(...c.changes);
  }
  for (const name of Object.keys(pa)) if (!(name in pb)) changes.push(`${at === '' ? name : `${at}.${name}`}: added`);
  return { kind: breaking ? 'breaking' : changes.length === 0 ? 'identical' : 'addition', changes };
}

export interface PublishedSchema {
  schemaVer: string;
  file: string;
  schema: Schema;
}

/** The published event schemas, oldest first. */
export function publishedEventSchemas(dir = SCHEMAS_DIR): PublishedSchema[] {
  const folder = path.join(dir, EVENT_DIR);
  if (!fs.existsSync(folder)) return [];
  return fs
    .readdirSync(folder)
    .filter((f) => f.endsWith('.json'))
    .map((f) => ({ schemaVer: f.slice(0, -'.json'.length), file: path.join(folder, f), schema: JSON.parse(fs.readFileSync(path.join(folder, f), 'utf8')) as Schema }))
    .sort((a, b) => compareSchemaVer(a.schemaVer, b.schemaVer));
}

export interface RegistryVersion {
  version: number;
  schemaVer: string;
  schema: Schema;
}

/** What the code declares: each supported schema_version with its SchemaVer and JSON Schema. */
export function declaredEventSchemas(): RegistryVersion[] {
  return Object.values(SCHEMA_VERSIONS).map((v) => ({ version: v.version, schemaVer: v.schemaVer, schema: asJson(v.schema) }));
}

export interface CheckResult {
  ok: boolean;
  problems: string[];
  /** One line per published schema and per raw column change, for `schemas list`. */
  notes: string[];
}

/**
 * The registry check: every declared version is published and equal to its file; the files of
 * one MODEL form a chain of ADDITIONs; the raw lake columns only grow.
 */
export function checkRegistry(opts: { dir?: string; declared?: RegistryVersion[]; rawColumns?: Record<string, string> } = {}): CheckResult {
  const dir = opts.dir ?? SCHEMAS_DIR;
  const declared = opts.declared ?? declaredEventSchemas();
  const rawColumns: Record<string, string> = opts.rawColumns ?? RAW_EVENT_COLUMNS;
  const published = publishedEventSchemas(dir);
  const problems: string[] = [];
  const notes: string[] = [];
  for (const d of declared) {
    const ver = parseSchemaVer(d.schemaVer);
    if (!ver || ver[0] !== d.version) {
      problems.push(`schema_version ${d.version}: SchemaVer ${d.schemaVer} must be ${d.version}-R-A (schema_version is the MODEL)`);
      continue;
    }
    const file = published.find((p) => p.schemaVer === d.schemaVer);
    if (!file) {
      const prior = published.filter((p) => parseSchemaVer(p.schemaVer)![0] === d.version).pop();
      const how = prior ? compatibility(prior.schema, d.schema) : null;
      problems.push(
        `schema_version ${d.version} (${d.schemaVer}) is not published: run \`npm run schemas -- publish\`` +
          (how?.kind === 'breaking' ? `; but it breaks ${prior!.schemaVer} (${how.changes.filter((c) => !c.endsWith('added')).join('; ')}): that needs a new schema_version` : ''),
      );
      continue;
    }
    if (!isDeepStrictEqual(file.schema, d.schema)) {
      const c = compatibility(file.schema, d.schema);
      problems.push(
        `schema_version ${d.version} differs from its published file ${path.relative(dir, file.file)} (a published schema never changes): ` +
          (c.kind === 'breaking'
            ? `the change breaks readers (${c.changes.join('; ')}): declare a new schema_version with an upcaster`
            : `the change is an ADDITION (${c.changes.join('; ')}): give it the next SchemaVer (e.g. ${d.version}-0-${(ver[2] ?? 0) + 1}) and publish it`),
      );
    }
  }
  // Each MODEL's files: every later file accepts what the earlier did.
  for (let i = 1; i < published.length; i += 1) {
    const [a, b] = [published[i - 1], published[i]];
    const model = parseSchemaVer(b.schemaVer)![0];
    if (parseSchemaVer(a.schemaVer)![0] !== model) continue;
    const c = compatibility(a.schema, b.schema);
    if (c.kind === 'breaking') problems.push(`${b.schemaVer} breaks ${a.schemaVer} within MODEL ${model}: ${c.changes.join('; ')}`);
  }
  for (const p of published) {
    const model = parseSchemaVer(p.schemaVer)?.[0];
    if (model === undefined) problems.push(`${path.relative(dir, p.file)}: not a SchemaVer file name (MODEL-REVISION-ADDITION.json)`);
    else if (!declared.some((d) => d.version === model)) problems.push(`${p.schemaVer} is published but schema_version ${model} is no longer accepted: events of it would be dead-lettered`);
    const prev = published.filter((q) => q !== p && parseSchemaVer(q.schemaVer)?.[0] === model && compareSchemaVer(q.schemaVer, p.schemaVer) < 0).pop();
    notes.push(`${p.schemaVer}  ${prev ? `ADDITION to ${prev.schemaVer}` : model === 1 ? 'first MODEL' : `new MODEL (upcast to the v1 view)`}`);
  }
  // Raw lake columns: the published list must be a prefix-preserving subset with the same types.
  const colFile = path.join(dir, RAW_COLUMNS_FILE);
  const publishedCols = fs.existsSync(colFile) ? (JSON.parse(fs.readFileSync(colFile, 'utf8')) as Record<string, string>) : null;
  if (!publishedCols) problems.push(`${RAW_COLUMNS_FILE} is missing: run \`npm run schemas -- publish\``);
  else {
    const names = Object.keys(rawColumns);
    for (const [name, type] of Object.entries(publishedCols)) {
      if (!(name in rawColumns)) problems.push(`raw lake column ${name} was dropped: objects already written have it; columns are only added`);
      else if (rawColumns[name] !== type) problems.push(`raw lake column ${name} changed type ${type} → ${rawColumns[name]}: add a new column instead`);
    }
    const added = names.filter((n) => !(n in publishedCols));
    if (added.length > 0) problems.push(`raw lake columns ${added.join(', ')} are not published: run \`npm run schemas -- publish\``);
    notes.push(`raw lake: ${Object.keys(publishedCols).length} columns published`);
  }
  return { ok: problems.length === 0, problems, notes };
}

/**
 * Write what the code declares into the registry: new SchemaVer files and the raw column list.
 * Refuses to overwrite a published file or to drop/retype a column (those are the check's
 * problems, not something publishing fixes).
 */
export function publishRegistry(dir = SCHEMAS_DIR): string[] {
  const written: string[] = [];
  const published = publishedEventSchemas(dir);
  for (const d of declaredEventSchemas()) {
    const file = path.join(dir, EVENT_DIR, `${d.schemaVer}.json`);
    const existing = published.find((p) => p.schemaVer === d.schemaVer);
    if (existing) {
      if (!isDeepStrictEqual(existing.schema, d.schema)) throw new Error(`${path.relative(dir, file)} is published and differs: a published schema never changes`);
      continue;
    }
    const prior = published.filter((p) => parseSchemaVer(p.schemaVer)![0] === d.version).pop();
    if (prior && compatibility(prior.schema, d.schema).kind === 'breaking') {
      throw new Error(`${d.schemaVer} breaks ${prior.schemaVer}: a breaking change needs a new schema_version`);
    }
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `${JSON.stringify(d.schema, null, 2)}\n`);
    written.push(path.relative(REPO_ROOT, file));
  }
  const colFile = path.join(dir, RAW_COLUMNS_FILE);
  const before = fs.existsSync(colFile) ? (JSON.parse(fs.readFileSync(colFile, 'utf8')) as Record<string, string>) : {};
  for (const [name, type] of Object.entries(before)) {
    if (RAW_EVENT_COLUMNS[name as keyof typeof RAW_EVENT_COLUMNS] !== type) throw new Error(`raw lake column ${name} (${type}) was dropped or retyped: columns are only added`);
  }
  const after = { ...before, ...RAW_EVENT_COLUMNS };
  if (!isDeepStrictEqual(Object.keys(after), Object.keys(before)) || !fs.existsSync(colFile)) {
    fs.mkdirSync(path.dirname(colFile), { recursive: true });
    fs.writeFileSync(colFile, `${JSON.stringify(after, null, 2)}\n`);
    written.push(path.relative(REPO_ROOT, colFile));
  }
  return written;
}
