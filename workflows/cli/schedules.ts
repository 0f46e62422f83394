/**
 * Lists and operates the batch schedules.
 *
 *   npm run schedules -- list
 *   npm run schedules -- pause|resume|trigger <hourly|daily|reconcile|retention|compact>
 *   npm run schedules -- ensure          (create or update them without starting a worker)
 */
import { Command } from 'commander';
import { ScheduleNotFoundError, type Client } from '@temporalio/client';
import { config, type Config } from '../../common/config';
import { connectClient, parseCli, runCliIfMain, workflowLink } from '../client';
import { SCHEDULE_NAMES, scheduleId, scheduleUiUrl, type ScheduleName } from '../ids';
import { ensureSchedules } from '../schedules';

export function resolveScheduleId(cfg: Config, name: string): string {
  return (SCHEDULE_NAMES as readonly string[]).includes(name) ? scheduleId(cfg.orchestration.scheduleIdPrefix, name as ScheduleName) : name;
}

/** Triggers a schedule now and returns the workflow it started (waits briefly for the server to report it). */
export async function triggerSchedule(client: Client, cfg: Config, name: string, timeoutMs = 15_000): Promise<{ workflowId: string; url: string } | null> {
  const handle = client.schedule.getHandle(resolveScheduleId(cfg, name));
  const seen = new Set((await handle.describe()).info.recentActions.map((a) => a.action.workflow.workflowId));
  await handle.trigger();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const d = await handle.describe();
    const started = [...d.info.runningActions.map((a) => a.workflow.workflowId), ...d.info.recentActions.map((a) => a.action.workflow.workflowId)].find((id) => !seen.has(id));
    if (started) return { workflowId: started, url: workflowLink(cfg, started) };
    await new Promise((r) => setTimeout(r, 300));
  }
  return null;
}

function describeRanges(rs: { start: number; end: number; step: number }[], width: number, every: number): string {
  if (rs.length === 1 && rs[0].start === 0 && rs[0].end >= every - 1 && rs[0].step === 1) return '*';
  return rs.map((r) => (r.start === r.end ? String(r.start).padStart(width, '0') : `${r.start}-${r.end}${r.step > 1 ? `/${r.step}` : ''}`)).join(',');
}

/** `*:05` (every hour at :05), `00:30` (daily). */
function describeCalendar(c: { hour: { start: number; end: number; step: number }[]; minute: { start: number; end: number; step: number }[] }): string {
  return `${describeRanges(c.hour, 2, 24)}:${describeRanges(c.minute, 2, 60)}`;
}

async function list(client: Client, cfg: Config): Promise<void> {
  const prefix = cfg.orchestration.scheduleIdPrefix;
  let any = false;
  for await (const s of client.schedule.list()) {
    if (!s.scheduleId.startsWith(prefix)) continue;
    any = true;
    const d = await client.schedule.getHandle(s.scheduleId).describe();
    const spec = [...(d.spec.calendars ?? []).map(describeCalendar), ...(d.spec.intervals ?? []).map((i) => `every ${Number(i.every) / 60_000} min`)];
    const last = d.info.recentActions.at(-1);
    console.log(`${s.scheduleId}${d.state.paused ? '  [PAUSED]' : ''}`);
    console.log(`  workflow   ${d.action.workflowType} on ${d.action.taskQueue}`);
    console.log(`  when       ${spec.join(', ') || '(custom calendar)'} UTC; overlap ${d.policies.overlap}, catch-up ${Math.round(Number(d.policies.catchupWindow) / 60_000)} min`);
    console.log(`  next       ${d.info.nextActionTimes.slice(0, 2).map((t) => t.toISOString()).join(', ') || '-'}`);
    console.log(`  last       ${last ? `${last.scheduledAt.toISOString()} ${workflowLink(cfg, last.action.workflow.workflowId)}` : '-'}`);
    if (d.state.note) console.log(`  note       ${d.state.note}`);
    console.log(`  ${scheduleUiUrl(cfg.temporal.uiUrl, cfg.temporal.namespace, s.scheduleId)}`);
  }
  if (!any) console.log(`no schedules named ${prefix}*; start a worker (npm run worker) or run: npm run schedules -- ensure`);
}

export async function main(argv: string[]): Promise<number> {
  const cfg = config();
  let code = 0;
  const withClient = (fn: (client: Client) => Promise<void>) => async () => {
    const client = await connectClient(cfg);
    try {
      await fn(client);
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) {
        console.error(`error: no such schedule: ${err.scheduleId} (names: ${SCHEDULE_NAMES.join(', ')})`);
        code = 1;
      } else throw err;
    } finally {
      await client.connection.close();
    }
  };
  const names = `one of ${SCHEDULE_NAMES.join(', ')} (or a full schedule id)`;
  const program = new Command('schedules').description('The batch schedules: hourly, daily, late-data reconciliation, raw retention.').exitOverride();
  program.command('list').description('show each schedule, its timing, next and last runs').action(withClient((c) => list(c, cfg)));
  program
    .command('pause <name>')
    .description(`pause a schedule (${names})`)
    .option('--note <text>', 'why, shown in the UI', 'paused from the CLI')
    .action((name: string, o: { note: string }) =>
      withClient(async (c) => {
        await c.schedule.getHandle(resolveScheduleId(cfg, name)).pause(o.note);
        console.log(`paused ${resolveScheduleId(cfg, name)}`);
      })(),
    );
  program
    .command('resume <name>')
    .description(`resume a paused schedule (${names})`)
    .action((name: string) =>
      withClient(async (c) => {
        await c.schedule.getHandle(resolveScheduleId(cfg, name)).unpause('resumed from the CLI');
        console.log(`resumed ${resolveScheduleId(cfg, name)}`);
      })(),
    );
  program
    .command('trigger <name>')
    .description(`run a schedule's action now (${names})`)
    .action((name: string) =>
      withClient(async (c) => {
        const started = await triggerSchedule(c, cfg, name);
        console.log(`triggered ${resolveScheduleId(cfg, name)}`);
        console.log(started ? `  ${started.workflowId}\n  ${started.url}` : `  ${scheduleUiUrl(cfg.temporal.uiUrl, cfg.temporal.namespace, resolveScheduleId(cfg, name))}`);
      })(),
    );
  program
    .command('ensure')
    .description('create the schedules, or update them to the current config (the worker does this when it starts)')
    .action(
      withClient(async (c) => {
        for (const s of await ensureSchedules(c, cfg)) console.log(`${s.outcome} ${s.scheduleId}  ${s.url}`);
      }),
    );
  return (await parseCli(program, argv)) ?? code;
}

runCliIfMain(import.meta.url, main);
