/**
 * Erases users from the lake and the speed layer (GDPR art. 17 / CCPA deletion).
 *
 *   npm run erase -- --user <id> [--user <id> …] [--wait]
 *   npm run erase -- --status <requestId>
 */
import { Command } from 'commander';
import { SingleBar } from 'cli-progress';
import { config } from '../../common/config';
import { connectClient, runCliIfMain } from '../client';
import { erasureStatus, isErasureRequestId, startErasure } from '../erasure-client';
import type { ErasureProgress } from '../types';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function describeProgress(p: ErasureProgress | null): string {
  if (!p) return 'waiting for a worker…';
  const periods = p.periods.hourly.total + p.periods.daily.total;
  const done = p.periods.hourly.done + p.periods.daily.done;
  return `round ${p.round}: ${p.step} | scanned ${p.objectsScanned} | rewritten raw ${p.rewritten.raw} dlq ${p.rewritten.dlq} published ${p.rewritten.published} | periods ${done}/${periods}`;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('erase')
    .description(
      'Erase users from every zone of the lake (raw events, dead letters, processed and aggregated tables) and from Redis, ' +
        'recompute the periods they were counted in, and write an audit record (keyed hashes, never the ids). ' +
        'Runs as a Temporal workflow: it survives worker restarts; the same users twice join the running request.',
    )
    .option('--user <id>', 'a user id to erase (repeat for several)', collect, [] as string[])
    .option('--wait', 'show progress until the erasure has finished')
    .option('--status <requestId>', 'show the state of an erasure request instead of starting one')
    .addHelpText(
      'after',
      '\nExamples:\n  npm run erase -- --user user_42_7 --user user_42_9 --wait\n  npm run erase -- --status er-0123456789abcdef\n\n' +
        'HyperLogLog keys (distinct-user estimates) cannot forget a member: they keep counting the users until they expire ' +
        '(SPEED_RETENTION_MS after their bucket); the audit record says when. See docs/operations.md, "Erasure".',
    )
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    return (err as { exitCode?: number }).exitCode ?? 2;
  }
  const opts = program.opts<{ user: string[]; wait?: boolean; status?: string }>();
  if (opts.status === undefined && opts.user.length === 0) {
    console.error('error: give at least one --user <id> (or --status <requestId>)');
    return 2;
  }
  if (opts.status !== undefined && !isErasureRequestId(opts.status)) {
    console.error(`error: "${opts.status}" is not an erasure request id (er-<16 hex>)`);
    return 2;
  }
  if (opts.user.some((u) => u.length < 1 || u.length > 128)) {
    console.error('error: a user id is 1 to 128 characters');
    return 2;
  }
  const cfg = config();
  const client = await connectClient(cfg);
  try {
    if (opts.status !== undefined) {
      const s = await erasureStatus(client, cfg, opts.status);
      if (!s) {
        console.error(`error: no erasure ${opts.status}`);
        return 1;
      }
      console.log(JSON.stringify(s, null, 2));
      return s.state === 'failed' ? 1 : 0;
    }
    const started = await startErasure(client, cfg, opts.user);
    console.log(`erasure ${started.requestId} of ${new Set(opts.user).size} user(s)`);
    console.log(`  workflow ${started.workflowId}`);
    console.log(`  ${started.url}`);
    if (!opts.wait) {
      console.log(`follow it with: npm run erase -- --status ${started.requestId}`);
      return 0;
    }
    const bar = new SingleBar({ format: '{bar} {percentage}% | {status}', hideCursor: true, clearOnComplete: false }, undefined);
    // Steps of a round; the periods recomputed are most of the work and fill the bar.
    bar.start(1, 0, { status: 'starting' });
    const poll = async () => {
      const s = await erasureStatus(client, cfg, started.requestId).catch(() => null);
      const p = s?.progress ?? null;
      const total = p ? p.periods.hourly.total + p.periods.daily.total + 1 : 1;
      const done = p ? p.periods.hourly.done + p.periods.daily.done + (p.step === 'finished' ? 1 : 0) : 0;
      bar.setTotal(total);
      bar.update(done, { status: describeProgress(p) });
    };
    const timer = setInterval(() => void poll(), 1000);
    let failed: unknown;
    try {
      await started.handle.result();
    } catch (err) {
      failed = err;
    } finally {
      clearInterval(timer);
    }
    await poll();
    bar.stop();
    const s = await erasureStatus(client, cfg, started.requestId);
    if (failed !== undefined || s?.state !== 'completed') {
      console.log(`erasure failed: ${s?.error ?? (failed as Error)?.message}`);
      return 1;
    }
    const p = s.progress!;
    console.log(
      `erasure finished: ${p.rewritten.raw} raw, ${p.rewritten.dlq} dead-letter and ${p.rewritten.published} published object(s) rewritten, ` +
        `${p.rowsRemoved} row(s) removed, ${p.periods.hourly.done} hour(s) and ${p.periods.daily.done} day(s) recomputed; audit ${s.auditKey}`,
    );
    return 0;
  } finally {
    await client.connection.close();
  }
}

runCliIfMain(import.meta.url, main);
