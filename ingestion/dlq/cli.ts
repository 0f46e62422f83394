/**
 * `npm run dlq -- list|replay`: the dead letters archived in the lake
 * (raw/dlq/), summarised by reason, and replayed through the collector after a
 * fix. Replayed events are validated again; ids that already made it in are
 * de-duplicated downstream by event_id, so a replay never double counts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { s3Client } from '../../common/clients';
import { config } from '../../common/config';
import { DLQ_REASONS, type DlqReason } from '../../common/contract';
import { DAY_RE } from '../../common/lake';
import { LAKE_VIEWS, LakeSession } from '../../batch-layer/lake-cli/catalog';

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
  .action(async (flags: RangeFlags & { url: string; apiKey: string; batchSize: number; dryRun: boolean }) => {
    const rows = await deadLetters(flags);
    if (flags.dryRun || rows.length === 0) {
      process.stdout.write(`${rows.length} dead letters would be replayed to ${flags.url}\n`);
      return;
    }
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

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`dlq: ${(err as Error).message}\n`);
  process.exit(1);
});
