/**
 * `npm run lake -- <command>`: SQL over the Parquet lake for data scientists.
 * Objects are staged from S3 into a scratch dir (only the views a query names,
 * only the days asked for) and declared as DuckDB views.
 */
import readline from 'node:readline';
import { SingleBar, Presets } from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import { s3Client } from '../../common/clients';
import { config } from '../../common/config';
import { DAY_RE } from '../../common/lake';
import { withScratchDir } from '../../common/lake-io';
import { LAKE_VIEWS, LakeCliError, LakeSession, type DayRange, type StageProgress, type LakeView } from '../../common/lake-views';
import { OUTPUT_FORMATS, emit, renderCsv, renderTable, runQuery, writeParquet, type OutputFormat } from './output';

interface CommonOptions {
  from?: string;
  to?: string;
  format: OutputFormat;
  out?: string;
  progress: boolean;
}

function day(value: string): string {
  if (!DAY_RE.test(value)) throw new InvalidArgumentError('expected a day as YYYY-MM-DD');
  return value;
}

function progressBar(enabled: boolean): StageProgress | undefined {
  if (!enabled) return undefined;
  let bar: SingleBar | null = null;
  return {
    start(total, view) {
      bar = new SingleBar({ format: `staging ${view.padEnd(20)} [{bar}] {value}/{total} objects`, stream: process.stderr, hideCursor: true }, Presets.shades_classic);
      bar.start(total, 0);
    },
    update(done) {
      bar?.update(done);
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

async function withSession<T>(opts: CommonOptions, fn: (session: LakeSession) => Promise<T>): Promise<T> {
  const cfg = config();
  const range: DayRange = { from: opts.from, to: opts.to };
  if (range.from && range.to && range.from > range.to) throw new LakeCliError(`--from ${range.from} is after --to ${range.to}`);
  return withScratchDir(cfg, async (dir) => {
    const session = await LakeSession.open({ s3: s3Client(cfg), bucket: cfg.s3.bucket, dir, range, progress: progressBar(opts.progress && process.stderr.isTTY) });
    try {
      return await fn(session);
    } finally {
      session.close();
    }
  });
}

/** Run one SQL text and print (or write) its result. */
async function execute(session: LakeSession, sql: string, opts: CommonOptions): Promise<void> {
  const missing = await session.prepare(sql);
  try {
    if (opts.format === 'parquet') {
      if (!opts.out) throw new LakeCliError('--format parquet needs --out <file>');
      const rows = await writeParquet(session.conn, sql, opts.out);
      process.stdout.write(`wrote ${rows} rows to ${opts.out}\n`);
      return;
    }
    const result = await runQuery(session.conn, sql);
    await emit(opts.format === 'csv' ? renderCsv(result) : renderTable(result), opts.out);
  } catch (err) {
    if (err instanceof LakeCliError) throw err;
    throw session.explain(err, missing);
  }
}

async function tables(session: LakeSession, opts: CommonOptions): Promise<void> {
  const rows: (string | number)[][] = [];
  for (const view of LAKE_VIEWS) {
    const info = await session.ensure(view);
    let count = 0;
    if (info.objects > 0) {
      const reader = await session.conn.runAndReadAll(`SELECT count(*)::BIGINT FROM ${view.name}`);
      count = Number(reader.getRowsJson()[0][0]);
    }
    rows.push([view.name, info.objects, count, info.bytes, view.prefix, view.description]);
  }
  const result = { columns: ['table', 'objects', 'rows', 'bytes', 'prefix', 'description'], rows };
  await emit(opts.format === 'csv' ? renderCsv(result) : renderTable(result, 90), opts.out);
}

async function repl(session: LakeSession, opts: CommonOptions): Promise<void> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  let format: OutputFormat = opts.format === 'parquet' ? 'table' : opts.format;
  process.stdout.write(
    `lake SQL on s3://${config().s3.bucket} — end statements with ';'. Tables: ${LAKE_VIEWS.map((v) => v.name).join(', ')}\n` +
      `.tables  list tables with row counts   .format table|csv   .quit\n`,
  );
  let pending = '';
  const prompt = () => {
    rl.setPrompt(pending ? '   ...> ' : 'lake> ');
    rl.prompt();
  };
  prompt();
  for await (const line of rl) {
    const trimmed = line.trim();
    if (!pending && trimmed.startsWith('.')) {
      const [cmd, arg] = trimmed.split(/\s+/);
      if (cmd === '.quit' || cmd === '.exit') break;
      else if (cmd === '.tables') await tables(session, { ...opts, format, out: undefined }).catch(report);
      else if (cmd === '.format' && (arg === 'table' || arg === 'csv')) format = arg;
      else process.stdout.write(`unknown command ${trimmed} (.tables, .format table|csv, .quit)\n`);
      prompt();
      continue;
    }
    pending += (pending ? '\n' : '') + line;
    if (pending.trim().endsWith(';')) {
      const sql = pending;
      pending = '';
      await execute(session, sql, { ...opts, format, out: undefined }).catch(report);
    }
    prompt();
  }
  rl.close();
}

function report(err: unknown): void {
  process.stderr.write(`error: ${(err as Error).message}\n`);
}

function withCommon(cmd: Command): Command {
  return cmd
    .addOption(new Option('--from <day>', 'first day (YYYY-MM-DD) to stage; limits downloads').argParser(day))
    .addOption(new Option('--to <day>', 'last day (YYYY-MM-DD, inclusive) to stage').argParser(day))
    .addOption(new Option('-f, --format <format>', 'result format').choices(OUTPUT_FORMATS).default('table'))
    .option('-o, --out <file>', 'write the result to a file instead of stdout (required for parquet)')
    .option('--no-progress', 'no progress bar while staging');
}

const program = new Command()
  .name('lake')
  .description('Query the Parquet lake (S3/MinIO) with DuckDB. Views: ' + LAKE_VIEWS.map((v: LakeView) => v.name).join(', '))
  .showHelpAfterError();

withCommon(program.command('sql').description('run SQL over the lake views and print the result').argument('<query>', 'SQL; the last statement is shown'))
  .addHelpText('after', `\nExample:\n  npm run lake -- sql "SELECT event_type, count(*) FROM raw_events GROUP BY ALL ORDER BY 2 DESC" --from 2024-05-01 --to 2024-05-01`)
  .action(async (query: string, opts: CommonOptions) => withSession(opts, (s) => execute(s, query, opts)));

withCommon(program.command('tables').description('list the lake tables with object and row counts')).action(async (opts: CommonOptions) =>
  withSession(opts, (s) => tables(s, opts)),
);

withCommon(program.command('repl').description('interactive SQL; views are staged on first use')).action(async (opts: CommonOptions) =>
  withSession(opts, (s) => repl(s, opts)),
);

try {
  await program.parseAsync();
} catch (err) {
  report(err);
  process.exitCode = 1;
}
