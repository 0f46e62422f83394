/**
 * `npm run dlq -- list|replay`: the dead letters archived in the lake
 * (raw/dlq/), summarised by reason, and replayed through the collector after a
 * fix. Replayed events are validated again; ids that already made it in are
 * de-duplicated downstream by event_id, so a replay never double counts.
 *
 * `too_late` letters (older than the lateness horizon) are rejected again by the
 * collector by design. `replay --accept-too-late` is the operator's explicit
 * override: those letters are validated here without the horizon, at the time
 * the collector first received them (so a sent_at correction comes out the
 * same), and produced straight to events.raw; the command then names the hours
 * and days they fall in and the backfill that recomputes them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { eventProducer, s3Client } from '../../common/clients';
import { config } from '../../common/config';
import { DLQ_REASONS, validateEvent, type DlqReason, type EventRecord } from '../../common/contract';
import { DAY_RE, dayId, hourId } from '../../common/lake';
import { LAKE_VIEWS, LakeSession } from '../../common/lake-views';

const DLQ_VIEW = LAKE_VIEWS.find((v) => v.name === 'dlq')!;

interface RangeFlags {
  from?: string;
  to?: string;
  reason?: DlqReason[];
}

function day(flag: string) {
  return (raw: string): string => {
    if (!DAY_RE.test(raw)) throw new InvalidArgumentError(`${flag} must be a day YYYY-MM-DD, got "${raw}"`);
    return raw;
  };
}

function reason(raw: string, prev: DlqReason[] = []): DlqReason[] {
  if (!(DLQ_REASONS as readonly string[]).includes(raw)) throw new InvalidArgumentError(`unknown reason "${raw}" (reasons: ${DLQ_REASONS.join(', ')})`);
  return [...prev, raw as DlqReason];
}

/** Dead letters matching the flags, oldest first: the original text and its reason. */
async function deadLetters(flags: RangeFlags): Promise<{ reason: string; raw: string; received_at: number }[]> {
  const cfg = config();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dlq-'));
  const session = await LakeSession.open({ s3: s3Client(cfg), bucket: cfg.s3.bucket, dir, range: { from: flags.from, to: flags.to } });
  try {
    if ((await session.ensure(DLQ_VIEW)).objects === 0) return [];
    const where = flags.reason?.length ? `WHERE reason IN (${flags.reason.map((r) => `'${r}'`).join(', ')})` : '';
    const reader = await session.conn.runAndReadAll(
      `SELECT reason, raw, received_at::DOUBLE AS received_at FROM dlq ${where} ORDER BY received_at, kafka_partition, kafka_offset`,
    );
    return reader.getRowObjectsJS() as { reason: string; raw: string; received_at: number }[];
  } finally {
    session.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function withRange(cmd: Command): Command {
  return cmd
    .option('--from <day>', 'first day of arrival (YYYY-MM-DD, inclusive)', day('--from'))
    .option('--to <day>', 'last day of arrival (YYYY-MM-DD, inclusive)', day('--to'))
    .option('--reason <reason>', `only this reason (repeatable): ${DLQ_REASONS.join(', ')}`, reason);
}

const program = new Command('dlq')
  .description('Dead letters archived in the lake (raw/dlq/): what was rejected and why, and replay after a fix.')
  .showHelpAfterError();

withRange(program.command('list').description('count dead letters by reason (and show a sample of each)'))
  .option('--samples <n>', 'sample texts per reason', (v) => Number(v), 1)
  .action(async (flags: RangeFlags & { samples: number }) => {
    const rows = await deadLetters(flags);
    if (rows.length === 0) {
      process.stdout.write('no dead letters in that range\n');
      return;
    }
    const byReason = new Map<string, string[]>();
    for (const r of rows) byReason.set(r.reason, [...(byReason.get(r.reason) ?? []), r.raw]);
    for (const [why, raws] of [...byReason].sort((a, b) => b[1].length - a[1].length)) {
      process.stdout.write(`${why.padEnd(24)} ${String(raws.length).padStart(8)}\n`);
      for (const sample of raws.slice(0, flags.samples)) process.stdout.write(`    ${sample.length > 160 ? `${sample.slice(0, 160)}…` : sample}\n`);
    }
  });

withRange(program.command('replay').description('send the original texts through the collector again (validated again; duplicates are harmless)'))
  .option('--url <url>', 'collector base URL', `http://127.0.0.1:${config().collector.port}`)
  .option('--api-key <key>', 'collector API key', config().collector.apiKeys[0])
  .option('--batch-size <n>', 'events per request', (v) => Number(v), 500)
  .option('--dry-run', 'only say what would be sent', false)
  .option(
    '--accept-too-late',
    'also take too_late letters in, past the lateness horizon: produced straight to events.raw (the collector would reject them again); follow with the backfill it prints',
    false,
  )
  .action(async (flags: RangeFlags & { url: string; apiKey: string; batchSize: number; dryRun: boolean; acceptTooLate: boolean }) => {
    const all = await deadLetters(flags);
    const late = flags.acceptTooLate ? all.filter((r) => r.reason === 'too_late') : [];
    const rows = flags.acceptTooLate ? all.filter((r) => r.reason !== 'too_late') : all;
    if (flags.dryRun || all.length === 0) {
      process.stdout.write(`${rows.length} dead letters would be replayed to ${flags.url}\n`);
      if (flags.acceptTooLate) process.stdout.write(`${late.length} too_late letters would be produced to events.raw\n`);
      return;
    }
    if (late.length > 0) await replayTooLate(late);
    const tally = { sent: 0, accepted: 0, rejected: new Map<string, number>() };
    // One-line texts go as NDJSON batches; a multi-line body (a whole request that did not parse) goes alone, as sent.
    const single = rows.filter((r) => r.raw.includes('\n'));
    const lines = rows.filter((r) => !r.raw.includes('\n'));
    const post = async (body: string, contentType: string) => {
      const res = await fetch(`${flags.url}/v1/events`, { method: 'POST', headers: { 'content-type': contentType, 'x-api-key': flags.apiKey }, body });
      const answer = (await res.json().catch(() => ({}))) as { results?: { status: string; reason?: string }[]; error?: string; message?: string };
      if (!answer.results) {
        const why = res.status === 400 ? 'malformed_json' : `http_${res.status}`;
        tally.rejected.set(why, (tally.rejected.get(why) ?? 0) + 1);
        if (res.status >= 500 || res.status === 401 || res.status === 429) throw new Error(`collector answered ${res.status}: ${answer.message ?? answer.error ?? ''}`);
        return;
      }
      for (const r of answer.results) {
        if (r.status === 'accepted') tally.accepted += 1;
        else tally.rejected.set(r.reason ?? 'rejected', (tally.rejected.get(r.reason ?? 'rejected') ?? 0) + 1);
      }
    };
    for (let i = 0; i < lines.length; i += flags.batchSize) {
      const batch = lines.slice(i, i + flags.batchSize);
      await post(batch.map((r) => r.raw).join('\n'), 'application/x-ndjson');
      tally.sent += batch.length;
    }
    for (const r of single) {
      await post(r.raw, 'application/json');
      tally.sent += 1;
    }
    const rejected = [...tally.rejected].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
    process.stdout.write(`replayed ${tally.sent}: accepted ${tally.accepted}; rejected again: ${rejected}\n`);
  });

/** The explicit override for too_late letters: validate without the horizon, produce to events.raw, name the backfill. */
async function replayTooLate(rows: { raw: string; received_at: number }[]): Promise<void> {
  const cfg = config();
  const records: EventRecord[] = [];
  const invalid = new Map<string, number>();
  for (const r of rows) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.raw);
    } catch {
      invalid.set('malformed_json', (invalid.get('malformed_json') ?? 0) + 1);
      continue;
    }
    const v = validateEvent(parsed, Number(r.received_at), { latenessHorizonMs: Number.POSITIVE_INFINITY });
    if (v.ok) records.push(v.record);
    else invalid.set(v.reason, (invalid.get(v.reason) ?? 0) + 1);
  }
  if (records.length > 0) {
    // The collector's producer: the same partition per user, acknowledged by all replicas.
    const producer = eventProducer(cfg, `${cfg.kafka.clientId}-dlq-replay`);
    try {
      for (let i = 0; i < records.length; i += 500) {
        await producer.send(records.slice(i, i + 500).map((rec) => ({ topic: cfg.kafka.rawTopic, key: rec.user_id, value: JSON.stringify(rec) })));
      }
    } finally {
      await producer.close();
    }
  }
  const hours = [...new Set(records.map((r) => hourId(r.ts)))].sort();
  const days = [...new Set(records.map((r) => dayId(r.ts)))].sort();
  const rejected = [...invalid].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  process.stdout.write(`too_late: produced ${records.length} to ${cfg.kafka.rawTopic}; rejected: ${rejected}\n`);
  if (days.length > 0) {
    process.stdout.write(
      `they fall in ${hours.length} hour(s) of ${days.length} day(s) (${days[0]} … ${days[days.length - 1]}). Once the lake writer has landed them,\n` +
        `recompute with: npm run backfill -- --from ${days[0]} --to ${days[days.length - 1]} --kind daily\n` +
        `(a day whose raw input retention removed refuses to recompute: RawInputGoneError)\n`,
    );
  }
}

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`dlq: ${(err as Error).message}\n`);
  process.exit(1);
});
