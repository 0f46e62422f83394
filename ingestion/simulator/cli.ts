/**
 * Traffic simulator CLI: `npm run simulate -- --help`.
 *
 *   write <file>   deterministic NDJSON for replay or backfill
 *   send           HTTP to the collector: live (event times = now), a history
 *                  window [--from, --to), or a replay of an NDJSON file
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { config } from '../../common/config';
import { deviceSkewMs, withDeviceClock } from './clock';
import { INVALID_REASONS, simulate, writeNdjson, type SimulatedSend, type SimulationOptions } from './generate';

const DAY = 86_400_000;

function number(name: string, { min = -Infinity, max = Infinity, integer = false } = {}) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`);
    }
    return n;
  };
}

function instant(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`not a date: "${v}" (ISO 8601 like 2026-11-01 or 2026-11-01T12:00Z, or epoch ms)`);
  return n;
}

interface SimFlags {
  seed: number;
  users: number;
  from?: number;
  to?: number;
  days?: number;
  late: number;
  duplicates: number;
  invalid: number;
  v2: number;
}

function addSimulationOptions(cmd: Command): Command {
  return cmd
    .option('--seed <n>', 'random seed: the same seed and options give the same events, byte for byte', number('--seed', { integer: true }), 1)
    .option('--users <n>', 'distinct users', number('--users', { min: 1, integer: true }), 1000)
    .option('--from <date>', 'event-time window start, inclusive (ISO 8601 or epoch ms)', instant)
    .option('--to <date>', 'event-time window end, exclusive (default: --from + --days)', instant)
    .option('--days <n>', 'window length in days when --to is not given', number('--days', { min: 0.001 }))
    .option('--late <fraction>', 'fraction of valid events sent hours after their event time', number('--late', { min: 0, max: 1 }), 0)
    .option('--duplicates <fraction>', 'fraction of valid events sent twice (same event_id, same bytes)', number('--duplicates', { min: 0, max: 1 }), 0)
    .option('--invalid <fraction>', `extra invalid sends per valid event (${INVALID_REASONS.join(', ')})`, number('--invalid', { min: 0, max: 1 }), 0)
    .option('--v2 <fraction>', 'fraction of devices whose app sends schema_version 2 (properties.device, app_id): the same events, encoded the new way', number('--v2', { min: 0, max: 1 }), 0);
}

function windowOf(f: SimFlags, fallbackStart: number, fallbackDays: number): { startMs: number; endMs: number } {
  const startMs = f.from ?? fallbackStart;
  const endMs = f.to ?? startMs + (f.days ?? fallbackDays) * DAY;
  if (endMs <= startMs) throw new InvalidArgumentError('--to must be after --from');
  return { startMs, endMs };
}

function simOptions(f: SimFlags, window: { startMs: number; endMs: number }): SimulationOptions {
  return { seed: f.seed, users: f.users, ...window, lateFraction: f.late, duplicateFraction: f.duplicates, invalidFraction: f.invalid, v2Fraction: f.v2 };
}

const program = new Command('simulate')
  .description('Deterministic Netflix-like clickstream traffic: send it to the collector, or write it as NDJSON.')
  .showHelpAfterError();

addSimulationOptions(
  program
    .command('write')
    .description('write a simulated event-time window as NDJSON (one send per line, in send order)')
    .argument('<file>', 'output file (.ndjson)'),
)
  .addHelpText('after', '\nExample:\n  npm run simulate -- write week.ndjson --from 2026-11-01 --days 7 --users 5000 --late 0.02 --duplicates 0.01 --invalid 0.01')
  .action(async (file: string, f: SimFlags) => {
    const window = windowOf(f, Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate()) - DAY, 1);
    const bar = new cliProgress.SingleBar(
      { format: 'writing  {bar} {percentage}% of the window | {value} sends | {rate}/s', hideCursor: true, etaBuffer: 50 },
      cliProgress.Presets.shades_classic,
    );
    const span = window.endMs - window.startMs;
    bar.start(100, 0, { rate: 0 });
    const t0 = Date.now();
    let n = 0;
    const counts = await writeNdjson(file, simOptions(f, window), (s) => {
      if (++n % 5000 === 0) bar.update(Math.min(100, Math.floor(((s.sendAt - window.startMs) / span) * 100)), { rate: Math.round(n / ((Date.now() - t0) / 1000)) });
    });
    bar.update(100, { rate: Math.round(n / Math.max(0.001, (Date.now() - t0) / 1000)) });
    bar.stop();
    process.stdout.write(`${file}: ${JSON.stringify(counts)} (${new Date(window.startMs).toISOString()} .. ${new Date(window.endMs).toISOString()})\n`);
  });

interface SendFlags extends SimFlags {
  url: string;
  apiKey: string;
  rate: number;
  duration?: number;
  count?: number;
  batchSize: number;
  concurrency: number;
  file?: string;
  live: boolean;
  quiet: boolean;
  sentAt: boolean;
  skewedClocks: number;
}

/** The lines to send, each with what it is when known. */
type Source = AsyncIterable<{ line: string; send?: SimulatedSend }>;

async function* fileSource(file: string): Source {
  const rl = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of rl) if (line.trim() !== '') yield { line };
}

async function* historySource(opts: SimulationOptions): Source {
  for (const send of simulate(opts)) yield { line: send.line, send };
}

/**
 * Live mode: the simulated behaviour, re-stamped so event times are "now" as the
 * events go out (late events stay hours old; a duplicate repeats its original's
 * bytes exactly). Invalid lines go out untouched: their timestamps are the point.
 */
async function* liveSource(opts: SimulationOptions): Source {
  const restamped = new Map<string, string>();
  for (const send of simulate(opts)) {
    if (send.kind === 'invalid' || send.ts === undefined || send.eventId === undefined) {
      yield { line: send.line, send };
      continue;
    }
    let line = restamped.get(send.eventId);
    if (line === undefined || send.kind !== 'duplicate') {
      const ts = Date.now() - (send.lateByMs ?? 0);
      line = send.line.replace(`"timestamp":${send.ts},`, `"timestamp":${ts},`);
      restamped.set(send.eventId, line);
      // Duplicates follow within minutes of simulated time; keep the map small.
      if (restamped.size > 100_000) restamped.delete(restamped.keys().next().value!);
    } else restamped.delete(send.eventId);
    yield { line, send };
  }
}

addSimulationOptions(
  program
    .command('send')
    .description('send simulated traffic (or an NDJSON file) to the collector over HTTP, as NDJSON batches')
    .option('--url <url>', 'collector base URL', `http://127.0.0.1:${config().collector.port}`)
    .option('--api-key <key>', 'collector API key', config().collector.apiKeys[0])
    .option('--rate <events/s>', 'target send rate (0 = as fast as the collector takes it)', number('--rate', { min: 0 }), 1000)
    .option('--duration <s>', 'stop after this many seconds', number('--duration', { min: 0.1 }))
    .option('--count <n>', 'stop after this many sends', number('--count', { min: 1, integer: true }))
    .option('--batch-size <n>', 'events per request', number('--batch-size', { min: 1, integer: true }), 500)
    .option('--concurrency <n>', 'requests in flight', number('--concurrency', { min: 1, integer: true }), 4)
    .option('--file <ndjson>', 'replay this NDJSON file instead of simulating')
    .addOption(new Option('--live', 'event times are "now" as events go out (the default without --from/--file)').default(false))
    .option('--sent-at', 'valid events carry sent_at, the device clock when the request goes out (the collector corrects clock skew with it)', false)
    .option('--skewed-clocks <fraction>', 'fraction of users whose device clock is off (hours to years; implies --sent-at)', number('--skewed-clocks', { min: 0, max: 1 }), 0)
    .option('--quiet', 'no progress bar', false),
)
  .addHelpText(
    'after',
    `
Modes:
  live     (default)      event times = now: npm run simulate -- send --rate 2000 --duration 60 --late 0.01 --invalid 0.01
  history  --from [--to]  a past window as fast as --rate allows: npm run simulate -- send --from 2026-11-01 --days 2 --rate 0
  replay   --file x       an NDJSON file, line by line: npm run simulate -- send --file week.ndjson --rate 0
Event times older than the lateness horizon (BATCH_LATENESS_HORIZON_MS, 7 days) are dead-lettered as too_late.
429 and 503 answers are retried after their Retry-After (at-least-once: a retried batch may duplicate; the batch layer de-duplicates).`,
  )
  .action(async (f: SendFlags) => {
    const history = f.from !== undefined && !f.live;
    let source: Source;
    let mode: string;
    if (f.file) {
      source = fileSource(f.file);
      mode = `replay ${f.file}`;
    } else if (history) {
      const window = windowOf(f, f.from!, 1);
      source = historySource(simOptions(f, window));
      mode = `history ${new Date(window.startMs).toISOString()} .. ${new Date(window.endMs).toISOString()}`;
    } else {
      // Behaviour comes from a virtual month; only its timestamps are replaced.
      const virtualStart = Math.floor(Date.now() / DAY) * DAY - 30 * DAY;
      source = liveSource(simOptions(f, { startMs: virtualStart, endMs: virtualStart + 30 * DAY }));
      mode = 'live';
    }
    if (!f.file && !history && f.duration === undefined && f.count === undefined) {
      throw new InvalidArgumentError('live mode needs --duration or --count');
    }
    const summary = await send(source, f, mode);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (summary.failed > 0) process.exitCode = 1;
  });

async function send(source: Source, f: SendFlags, mode: string) {
  const total = f.count ?? (f.duration !== undefined && f.rate > 0 ? Math.round(f.rate * f.duration) : 0);
  const bar = f.quiet
    ? undefined
    : new cliProgress.SingleBar(
        {
          format: total > 0
            ? `${mode} {bar} {percentage}% | {value}/{total} sent | {rate} ev/s | accepted {accepted} rejected {rejected} retried {retried}`
            : `${mode} | {value} sent | {rate} ev/s | accepted {accepted} rejected {rejected} retried {retried}`,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      );
  const stats = { sent: 0, accepted: 0, rejected: 0, retried: 0, failed: 0, requests: 0 };
  const t0 = Date.now();
  const deadline = f.duration !== undefined ? t0 + f.duration * 1000 : Infinity;
  bar?.start(total, 0, { rate: 0, accepted: 0, rejected: 0, retried: 0 });
  const ticker = setInterval(() => {
    const rate = Math.round(stats.sent / Math.max(0.001, (Date.now() - t0) / 1000));
    bar?.update(stats.sent, { rate, accepted: stats.accepted, rejected: stats.rejected, retried: stats.retried });
  }, 250);

  const it = source[Symbol.asyncIterator]();
  let exhausted = false;
  let taken = 0;
  const clocks = f.sentAt || f.skewedClocks > 0;
  type Item = { line: string; skewMs: number | null };
  const nextBatch = async (): Promise<Item[] | undefined> => {
    const lines: Item[] = [];
    while (lines.length < f.batchSize && !exhausted && (f.count === undefined || taken < f.count) && Date.now() < deadline) {
      const r = await it.next();
      if (r.done) {
        exhausted = true;
        break;
      }
      const s = r.value.send;
      // Only valid events come from a device clock; invalid sends stay as generated.
      const skewMs = clocks && s && s.kind !== 'invalid' && s.userId ? deviceSkewMs(s.userId, f.skewedClocks, f.seed) : null;
      lines.push({ line: r.value.line, skewMs });
      taken++;
    }
    return lines.length > 0 ? lines : undefined;
  };

  const post = async (lines: Item[]): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      // sent_at is the device clock when this attempt goes out, as an SDK stamps it.
      const now = Date.now();
      const body = lines.map((l) => (l.skewMs === null ? l.line : withDeviceClock(l.line, now, l.skewMs))).join('\n');
      let status = 0;
      let retryAfter = 1;
      try {
        const res = await fetch(`${f.url}/v1/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-ndjson', 'x-api-key': f.apiKey },
          body,
        });
        status = res.status;
        retryAfter = Number(res.headers.get('retry-after') ?? 1) || 1;
        const json = (await res.json().catch(() => ({}))) as { accepted?: number; rejected?: number; message?: string };
        stats.requests++;
        if (status === 200) {
          stats.accepted += json.accepted ?? 0;
          stats.rejected += json.rejected ?? 0;
          return;
        }
        if (status !== 429 && status !== 503) {
          stats.failed += lines.length;
          process.stderr.write(`\nrequest failed: HTTP ${status} ${json.message ?? ''}\n`);
          return;
        }
      } catch (err) {
        retryAfter = 1;
        if (attempt === 0) process.stderr.write(`\ncollector unreachable (${(err as Error).message}); retrying\n`);
      }
      if (Date.now() > deadline + 30_000 || attempt >= 30) {
        stats.failed += lines.length;
        return;
      }
      stats.retried++;
      await new Promise((r) => setTimeout(r, retryAfter * 1000));
    }
  };

  const worker = async () => {
    for (;;) {
      const lines = await nextBatch();
      if (!lines) return;
      stats.sent += lines.length;
      if (f.rate > 0) {
        // Pace by the schedule, not by the last request, so slow answers do not lower the rate.
        const due = t0 + (stats.sent / f.rate) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      await post(lines);
    }
  };
  await Promise.all(Array.from({ length: f.concurrency }, worker));
  clearInterval(ticker);
  const seconds = (Date.now() - t0) / 1000;
  bar?.update(stats.sent, { rate: Math.round(stats.sent / seconds), accepted: stats.accepted, rejected: stats.rejected, retried: stats.retried });
  bar?.stop();
  return { mode, ...stats, seconds: Number(seconds.toFixed(2)), eventsPerSec: Math.round(stats.sent / seconds) };
}

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`simulate: ${err.message}\n`);
  process.exit(1);
});
