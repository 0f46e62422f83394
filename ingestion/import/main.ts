/**
 * `npm run import -- <file|dir|s3://bucket/prefix> [--format …] [--backfill] [--dry-run]`:
 * historical events into the raw lake (ingestion/import/import.ts), with a progress bar,
 * a summary, and optionally the backfill that recomputes the periods it touched.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import { s3Client } from '../../common/clients';
import { config, type Config } from '../../common/config';
import { dayId } from '../../common/lake';
import { connectClient, runCliIfMain } from '../../workflows/client';
import { startBackfill } from '../../workflows/cli/backfill';
import { Importer, loadState, rejectedByReason, statePath, type ImportState } from './import';
import { FORMATS, InputError, countRows, importIdOf, listInputs, type Format } from './read';

const HELP_AFTER = `
Formats: NDJSON (.ndjson, .jsonl), JSON (.json: one event or an array), CSV (.csv, a header row;
properties.x / context.x columns, or the contract's field names, nest), Parquet (.parquet).
Each event is validated by the collector's contract (same dead-letter reasons, written to
raw/dlq/), enriched and pseudonymised as the collector does, de-duplicated by event_id against
the lake and within the import, and written to raw/events/ by event time. The lateness horizon
does not apply. Re-running the same command resumes an interrupted import
(checkpoint: imports/<import-id>/state.json in the lake bucket).

Examples:
  npm run import -- history/2025-01.ndjson
  npm run import -- exports/ --dry-run
  npm run import -- s3://archive/clickstream/2024/ --format parquet --backfill
  IMPORT_CHUNK_ROWS=10000 npm run import -- legacy.csv`;

function formatArg(value: string): Format {
  if (!(FORMATS as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${FORMATS.join(', ')}`);
  return value as Format;
}

function summary(state: ImportState, dryRun: boolean): string {
  const c = state.counts;
  const rejected = rejectedByReason(c);
  const rejectedTotal = rejected.reduce((n, [, k]) => n + k, 0);
  const lines = [
    `${dryRun ? 'dry run of import' : 'import'} ${state.importId}${state.finishedAt ? '' : ' (not finished)'}`,
    `  read                 ${c.read}`,
    `  accepted             ${c.accepted}`,
    `  duplicates skipped   ${c.duplicatesInLake + c.duplicatesInImport} (already in the lake ${c.duplicatesInLake}, earlier in the import ${c.duplicatesInImport})`,
    `  rejected             ${rejectedTotal}${rejected.map(([r, n]) => `\n    ${r.padEnd(24)} ${n}`).join('')}`,
  ];
  if (c.rawRetired > 0) lines.push(`  skipped, raw retired ${c.rawRetired} (their days' raw input was removed by retention; they cannot be recomputed)`);
  lines.push(`  objects written      ${c.rawObjects} raw, ${c.dlqObjects} dead-letter`);
  const days = state.days;
  lines.push(
    days.length === 0
      ? '  periods to recompute none'
      : `  periods to recompute ${state.hours.length} hour(s) in ${days.length} day(s): ${days.length <= 6 ? days.join(' ') : `${days[0]} … ${days[days.length - 1]}`}`,
  );
  if (!dryRun) lines.push(`  checkpoint           ${statePath(state.importId)}`);
  return lines.join('\n');
}

/** The progress display: a bar with rate and ETA on a terminal, a plain line per chunk otherwise. */
function progress(total: number, done: number) {
  const t0 = Date.now();
  const start = done;
  let value = done;
  const rate = () => Math.round((value - start) / Math.max(0.001, (Date.now() - t0) / 1000));
  if (process.stderr.isTTY) {
    const bar = new SingleBar(
      { format: '{bar} {percentage}% | {value}/{total} rows | {rate} rows/s | ETA {eta_formatted} | accepted {accepted} rejected {rejected}', hideCursor: true, etaBuffer: 50 },
      undefined,
    );
    bar.start(total, done, { rate: 0, accepted: 0, rejected: 0 });
    return {
      update(state: ImportState) {
        value = done + (state.counts.read - start);
        bar.update(value, { rate: rate(), accepted: state.counts.accepted, rejected: rejectedByReason(state.counts).reduce((n, [, k]) => n + k, 0) });
      },
      stop: () => bar.stop(),
    };
  }
  return {
    update(state: ImportState) {
      value = state.counts.read;
      const r = rate();
      const eta = r > 0 ? Math.ceil((total - value) / r) : null;
      process.stderr.write(`progress: ${value}/${total} rows (${total > 0 ? Math.floor((100 * value) / total) : 100}%), ${r} rows/s, ETA ${eta === null ? '?' : `${eta}s`}\n`);
    },
    stop: () => {},
  };
}

/** One daily backfill over the days the import touched (steps mode runs their hours too); today is left to the schedules. */
async function backfillDays(cfg: Config, days: readonly string[]): Promise<string> {
  const today = dayId(Date.now());
  const past = days.filter((d) => d < today);
  if (past.length === 0) return 'backfill: nothing to start (only today was touched; the schedules recompute it)';
  const client = await connectClient(cfg);
  try {
    const started = await startBackfill(client, cfg, { kind: 'daily', from: past[0], to: past[past.length - 1], mode: 'steps' });
    return `backfill started: ${started.range.count} day(s) ${started.range.first}..${started.range.last}\n  workflow ${started.handle.workflowId}\n  ${started.url}`;
  } finally {
    await client.connection.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('import')
    .description('Import historical events from files into the raw lake, validated and de-duplicated, resumable after a crash.')
    .argument('<source>', 'a file, a directory (its files, recursively, by name) or s3://bucket/prefix')
    .addOption(new Option('--format <format>', 'input format (default: from each file\'s extension)').argParser(formatArg))
    .option('--backfill', 'when done, start the daily backfill of the days it touched (Temporal)')
    .option('--dry-run', 'read, validate and de-duplicate against the lake, but write nothing')
    .addHelpText('after', HELP_AFTER)
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    return (err as { exitCode?: number }).exitCode ?? 2;
  }
  const source = program.args[0];
  const opts = program.opts<{ format?: Format; backfill?: boolean; dryRun?: boolean }>();
  const cfg = config();
  const s3 = s3Client(cfg);
  await fsp.mkdir(cfg.batch.scratchDir, { recursive: true });
  const scratch = await fsp.mkdtemp(path.join(cfg.batch.scratchDir, 'import-'));
  try {
    let files;
    try {
      files = await listInputs(source, opts.format, s3, scratch);
    } catch (err) {
      if (err instanceof InputError) {
        console.error(`error: ${err.message}`);
        return 2;
      }
      throw err;
    }
    const importId = importIdOf(files);
    const { state, resumed } = await loadState({ cfg, s3, importId, source, files });
    const dryRun = opts.dryRun === true;
    if (state.finishedAt) {
      console.log(`import ${importId} already finished at ${state.finishedAt}; nothing to do`);
    } else {
      if (resumed) console.error(`resuming import ${importId} from its checkpoint (${state.counts.read} rows done)`);
      else console.error(`import ${importId}: ${files.length} file(s)`);
      let total = 0;
      for (const f of files) total += await countRows(f);
      const bar = progress(total, state.counts.read);
      try {
        await new Importer({ cfg, s3, importId, source, files, scratch, dryRun, onChunk: (s) => bar.update(s) }, state).run();
      } finally {
        bar.stop();
      }
    }
    console.log(summary(state, dryRun));
    if (opts.backfill && !dryRun) console.log(await backfillDays(cfg, state.days));
    return 0;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

runCliIfMain(import.meta.url, main);
