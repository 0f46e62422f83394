/**
 * Compacts the raw objects of a range of days now (the `compact` schedule does
 * the previous day every night): each hour's small objects are merged into few
 * large ones, which the batch layer reads exactly as before.
 *
 *   npm run compact -- --from 2026-11-20 [--to 2026-11-21]
 */
import { Command, InvalidArgumentError } from 'commander';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { config } from '../../common/config';
import { DAY_RE, dayStartMs } from '../../common/lake';
import { connectClient, parseCli, runCliIfMain, workflowLink } from '../client';
import { batchAttributes } from '../search-attributes';
import { compactLake, type CompactResult } from '../workflows';

function dayArg(raw: string): string {
  if (!DAY_RE.test(raw) || new Date(dayStartMs(raw)).toISOString().slice(0, 10) !== raw) throw new InvalidArgumentError(`expected a day YYYY-MM-DD, got "${raw}"`);
  return raw;
}

export async function main(argv: string[]): Promise<number> {
  const cfg = config();
  let code = 0;
  const program = new Command('compact')
    .description("Merge each hour's small raw objects of the given days into few large ones (a compactLake workflow per day).")
    .requiredOption('--from <day>', 'first day (YYYY-MM-DD, UTC)', dayArg)
    .option('--to <day>', 'last day (inclusive; default: --from)', dayArg)
    .exitOverride()
    .action(async (flags: { from: string; to?: string }) => {
      const last = flags.to ?? flags.from;
      if (last < flags.from) throw new InvalidArgumentError(`--to (${last}) is before --from (${flags.from})`);
      const days: string[] = [];
      for (let t = dayStartMs(flags.from); t <= dayStartMs(last); t += 86_400_000) days.push(new Date(t).toISOString().slice(0, 10));
      const client = await connectClient(cfg);
      try {
        for (const day of days) {
          const workflowId = `${cfg.orchestration.workflowIdPrefix}compact-${day}`;
          try {
            const handle = await client.workflow.start(compactLake, {
              taskQueue: cfg.temporal.taskQueue,
              workflowId,
              args: [day],
              typedSearchAttributes: batchAttributes('compact', day),
            });
            console.log(`${day}: started ${workflowLink(cfg, workflowId)}`);
            const r: CompactResult = await handle.result();
            console.log(`${day}: ${r.hoursCompacted} hour(s) compacted, ${r.inputs} object(s) merged into ${r.outputs}`);
          } catch (err) {
            if (err instanceof WorkflowExecutionAlreadyStartedError) {
              console.error(`${day}: a compaction of this day is already running (${workflowLink(cfg, workflowId)})`);
            } else {
              console.error(`${day}: ${(err as Error).message}${(err as { cause?: Error }).cause ? `: ${(err as { cause?: Error }).cause!.message}` : ''}`);
            }
            code = 1;
          }
        }
      } finally {
        await client.connection.close();
      }
    });
  const exit = await parseCli(program, argv);
  return exit ?? code;
}

runCliIfMain(import.meta.url, main);
