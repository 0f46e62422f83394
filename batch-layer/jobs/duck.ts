/**
 * The DuckDB side of a job: one in-memory database per job step, the named SQL
 * files of batch-layer/sql, period variables, and zstd Parquet out.
 *
 * SQL files read views and tables by name (raw_events, events, day_events,
 * sessions, …) and the period through getvariable(), so the same statement runs
 * over staged lake objects in a job and over hand-made fixtures in a unit test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { BINGE_WINDOW_MS, NAVIGATION_TYPES, SESSION_GAP_MS } from '../../common/contract';
import { RAW_EVENT_COLUMNS } from '../../common/lake';

export const SQL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../sql');

const sqlCache = new Map<string, string>();
/** The text of batch-layer/sql/<name>.sql. */
export function sqlFile(name: string): string {
  let text = sqlCache.get(name);
  if (text === undefined) {
    text = fs.readFileSync(path.join(SQL_DIR, `${name}.sql`), 'utf8').trim().replace(/;\s*$/, '');
    sqlCache.set(name, text);
  }
  return text;
}

export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

export function sqlList(files: readonly string[]): string {
  return `[${files.map(sqlString).join(', ')}]`;
}

export type Row = Record<string, unknown>;

export class Duck {
  private constructor(
    private readonly instance: DuckDBInstance,
    readonly con: DuckDBConnection,
  ) {}

  /** With a signal, cancelling the job interrupts the running statement instead of waiting for it. */
  static async open(opts: { threads?: number; tempDir?: string; signal?: AbortSignal } = {}): Promise<Duck> {
    const options: Record<string, string> = { threads: String(opts.threads ?? 2) };
    if (opts.tempDir) options.temp_directory = opts.tempDir;
    const instance = await DuckDBInstance.create(':memory:', options);
    const con = await instance.connect();
    opts.signal?.addEventListener('abort', () => con.interrupt(), { once: true });
    // Constants of the contract are variables too, so the SQL names them instead of repeating numbers.
    await con.run(`SET VARIABLE session_gap_ms = ${SESSION_GAP_MS}::BIGINT`);
    await con.run(`SET VARIABLE binge_window_ms = ${BINGE_WINDOW_MS}::BIGINT`);
    await con.run(`SET VARIABLE navigation_types = ${sqlList(NAVIGATION_TYPES)}::VARCHAR[]`);
    return new Duck(instance, con);
  }

  async run(sql: string): Promise<void> {
    await this.con.run(sql);
  }

  /** Rows as plain JS values (BIGINT -> bigint, DATE -> DuckDB date value). */
  async rows(sql: string): Promise<Row[]> {
    const reader = await this.con.runAndReadAll(sql);
    return reader.getRowObjectsJS() as Row[];
  }

  /** Rows as JSON-safe values (BIGINT -> string, DATE -> 'YYYY-MM-DD'). */
  async json(sql: string): Promise<Row[]> {
    const reader = await this.con.runAndReadAll(sql);
    return reader.getRowObjectsJson() as Row[];
  }

  /** Rows of the named SQL file. */
  async select(sqlName: string): Promise<Row[]> {
    return this.rows(sqlFile(sqlName));
  }

  async scalar(sql: string): Promise<number> {
    const rows = await this.rows(sql);
    const v = rows[0] ? Object.values(rows[0])[0] : null;
    return v === null || v === undefined ? 0 : Number(v);
  }

  async setVariables(vars: Record<string, string | number | { date: string }>): Promise<void> {
    for (const [name, value] of Object.entries(vars)) {
      const literal =
        typeof value === 'number' ? `${value}::BIGINT` : typeof value === 'string' ? sqlString(value) : `DATE ${sqlString(value.date)}`;
      await this.con.run(`SET VARIABLE ${name} = ${literal}`);
    }
  }

  /** CREATE TABLE <table> AS the named SQL file; later statements read it by that name. */
  async materialize(table: string, sqlName: string = table): Promise<number> {
    await this.con.run(`CREATE OR REPLACE TABLE ${table} AS ${sqlFile(sqlName)}`);
    return this.scalar(`SELECT count(*) FROM ${table}`);
  }

  /**
   * The table as Parquet (zstd unless told otherwise); row order is the table's
   * (insertion) order, so output bytes are reproducible.
   */
  async writeParquet(table: string, file: string, compression: 'zstd' | 'lz4_raw' | 'uncompressed' = 'zstd'): Promise<void> {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await this.con.run(`COPY ${table} TO ${sqlString(file)} (FORMAT parquet, COMPRESSION ${compression})`);
  }

  close(): void {
    this.con.closeSync();
    this.instance.closeSync();
  }
}

/** The explicit column list of the raw schema, cast to its contract types (files written by older writers still line up). */
export function rawColumnsSelect(present?: ReadonlySet<string>): string {
  return Object.entries(RAW_EVENT_COLUMNS)
    .map(([name, type]) => (!present || present.has(name) ? `CAST("${name}" AS ${type}) AS "${name}"` : `CAST(NULL AS ${type}) AS "${name}"`))
    .join(', ');
}

/**
 * The columns the given Parquet files have between them. Raw objects written before a
 * column joined the lake contract lack it: rawColumnsSelect reads it as NULL there, so
 * the contract can grow a column without rewriting the master dataset.
 */
export async function parquetColumns(duck: Duck, files: readonly string[]): Promise<Set<string>> {
  const rows = await duck.rows(`DESCRIBE SELECT * FROM read_parquet(${sqlList(files)}, union_by_name = true)`);
  return new Set(rows.map((r) => String(r.column_name)));
}

/** An empty relation with the raw schema, for an hour with no objects. */
export function emptyRawSelect(): string {
  return `SELECT ${Object.entries(RAW_EVENT_COLUMNS)
    .map(([name, type]) => `CAST(NULL AS ${type}) AS "${name}"`)
    .join(', ')} WHERE false`;
}

export async function withDuck<T>(opts: { threads?: number; tempDir?: string; signal?: AbortSignal }, fn: (duck: Duck) => Promise<T>): Promise<T> {
  const duck = await Duck.open(opts);
  try {
    return await fn(duck);
  } finally {
    duck.close();
  }
}
