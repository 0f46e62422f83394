/** Rendering of query results: an aligned text table, CSV, or Parquet through DuckDB. */
import fsp from 'node:fs/promises';
import type { DuckDBConnection, Json } from '@duckdb/node-api';

export type OutputFormat = 'table' | 'csv' | 'parquet';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'csv', 'parquet'];

export interface QueryResult {
  columns: string[];
  rows: Json[][];
}

export async function runQuery(conn: DuckDBConnection, sql: string): Promise<QueryResult> {
  const extracted = await conn.extractStatements(sql);
  const n = extracted.count;
  if (n === 0) return { columns: [], rows: [] };
  // Every statement but the last only sets things up (CREATE, SET…); the last one is shown.
  for (let i = 0; i < n - 1; i++) await (await extracted.prepare(i)).run();
  const reader = await (await extracted.prepare(n - 1)).runAndReadAll();
  return { columns: reader.columnNames(), rows: reader.getRowsJson() };
}

function cell(v: Json): string {
  if (v === null) return 'NULL';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function renderTable(result: QueryResult, maxWidth = 60): string {
  if (result.columns.length === 0) return 'OK\n';
  const clip = (s: string) => {
    const flat = s.replace(/\s+/g, ' ');
    return flat.length > maxWidth ? `${flat.slice(0, maxWidth - 1)}…` : flat;
  };
  const body = result.rows.map((r) => r.map((v) => clip(cell(v))));
  const widths = result.columns.map((c, i) => Math.max(c.length, ...body.map((r) => r[i].length)));
  const numeric = result.columns.map((_, i) => result.rows.length > 0 && result.rows.every((r) => r[i] === null || typeof r[i] === 'number' || /^-?\d+(\.\d+)?$/.test(String(r[i]))));
  const line = (cells: string[]) => cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' │ ');
  const rule = widths.map((w) => '─'.repeat(w)).join('─┼─');
  const out = [line(result.columns.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c))), rule, ...body.map(line)];
  out.push(`(${result.rows.length} row${result.rows.length === 1 ? '' : 's'})`);
  return out.map((l) => l.trimEnd()).join('\n') + '\n';
}

function csvField(v: Json): string {
  if (v === null) return '';
  const s = cell(v);
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function renderCsv(result: QueryResult): string {
  const lines = [result.columns.map((c) => csvField(c)).join(','), ...result.rows.map((r) => r.map(csvField).join(','))];
  return lines.join('\n') + '\n';
}

/** Parquet needs DuckDB to write the file, so the query is wrapped in a COPY: one statement only. */
export async function writeParquet(conn: DuckDBConnection, sql: string, out: string): Promise<number> {
  const extracted = await conn.extractStatements(sql);
  if (extracted.count !== 1) throw new Error(`--format parquet takes exactly one query, got ${extracted.count} statements`);
  const query = sql.trim().replace(/;\s*$/, '');
  const reader = await conn.runAndReadAll(`COPY (${query}) TO '${out.replaceAll("'", "''")}' (FORMAT parquet, COMPRESSION zstd)`);
  return Number(reader.getRowsJson()[0]?.[0] ?? 0);
}

export async function emit(text: string, out?: string): Promise<void> {
  if (out) await fsp.writeFile(out, text);
  else process.stdout.write(text);
}
