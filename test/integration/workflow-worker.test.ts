/**
 * The worker as operators run it (`npm run worker`, a separate process) on the
 * real Temporal dev server: it creates the schedules idempotently, `trigger`
 * runs one, a worker killed with SIGKILL mid-backfill is replaced and the
 * backfill completes with the right outputs, and the CLIs refuse bad ranges
 * without starting anything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import { lakePaths, type RunManifest } from '../../common/lake';
import { getJson } from '../../common/lake-io';
import { startBackfill } from '../../workflows/cli/backfill';
import { listRuns } from '../../workflows/cli/runs';
import { resolveScheduleId, triggerSchedule } from '../../workflows/cli/schedules';
import { SCHEDULE_NAMES, periodWorkflowId, previousHour } from '../../workflows/ids';
import { ensureSchedules } from '../../workflows/schedules';
import type { RunSummary } from '../../workflows/types';
import { progressQuery } from '../../workflows/workflows';
import { isolatedConfig } from '../support/isolated';
import { eventually, orchestrationOverrides, seedRaw, temporalClient, waitFor } from './workflow-support';

process.env.LOG_LEVEL ??= 'warn';

const DAY = '2025-05-06';
const DAY_START = Date.parse(`${DAY}T00:00:00Z`);
const hourOf = (h: number) => `${DAY}T${String(h).padStart(2, '0')}`;
const TSX = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');

let cfg: Config;
let env: Record<string, string>;
let client: Client;
const workers = new Set<ChildProcess>();

/** Starts `workflows/worker.ts` in its own process group (tsx runs node as a child) and waits until it polls. */
async function startWorker(): Promise<ChildProcess> {
  const child = spawn(TSX, ['workflows/worker.ts'], { cwd: REPO_ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'info' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  workers.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor('the worker to start', async () => {
    if (child.exitCode !== null) throw new Error(`worker exited with ${child.exitCode}:\n${out}`);
    return out.includes('batch worker running');
  }, 120_000);
  return child;
}

function killWorker(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  const exited = new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
  try {
    process.kill(-child.pid!, signal);
  } catch {
    /* already gone */
  }
  workers.delete(child);
  return exited;
}

function runCli(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(TSX, [script, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const manifest = (period: string) => getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', period));

beforeAll(async () => {
  const overrides = { ...orchestrationOverrides('wfworker'), TEMPORAL_CREATE_SCHEDULES: 'true' };
  cfg = await isolatedConfig('wfworker', overrides);
  env = { ...overrides, S3_BUCKET: cfg.s3.bucket, TEMPORAL_TASK_QUEUE: cfg.temporal.taskQueue, REDIS_KEY_PREFIX: cfg.redis.keyPrefix };
  client = await temporalClient(cfg);
}, 120_000);

afterAll(async () => {
  for (const w of [...workers]) await killWorker(w, 'SIGTERM');
  // The schedules live on the shared dev server: remove this test's.
  for (const name of SCHEDULE_NAMES) await client?.schedule.getHandle(resolveScheduleId(cfg, name)).delete().catch(() => undefined);
  await client?.connection.close();
});

describe('the worker process', () => {
  it('creates the schedules when it starts, idempotently, and `trigger` runs the previous hour under its period id', async () => {
    const now = Date.now();
    const hour = previousHour(now);
    const hourStart = Date.parse(`${hour}:00:00Z`);
    const seeded = await seedRaw(cfg, { seed: 5, users: 4, startMs: hourStart, endMs: hourStart + 3_600_000 });
    const worker = await startWorker();

    const hourly = await client.schedule.getHandle(resolveScheduleId(cfg, 'hourly')).describe();
    expect(hourly.action.workflowType).toBe('hourlyBatch');
    expect(hourly.action.taskQueue).toBe(cfg.temporal.taskQueue);
    expect(hourly.policies.overlap).toBe(ScheduleOverlapPolicy.BUFFER_ONE);
    expect(hourly.policies.catchupWindow).toBe(cfg.orchestration.catchupWindowSec * 1000);
    expect(hourly.spec.calendars?.[0].minute).toEqual([{ start: cfg.orchestration.hourlyMinute, end: cfg.orchestration.hourlyMinute, step: 1 }]);
    const daily = await client.schedule.getHandle(resolveScheduleId(cfg, 'daily')).describe();
    expect(daily.action.workflowType).toBe('dailyBatch');
    const reconcile = await client.schedule.getHandle(resolveScheduleId(cfg, 'reconcile')).describe();
    expect(reconcile.action.workflowType).toBe('reconcileLateData');
    expect(reconcile.spec.intervals?.[0].every).toBe(15 * 60_000);
    expect(reconcile.policies.overlap).toBe(ScheduleOverlapPolicy.SKIP);
    expect((await client.schedule.getHandle(resolveScheduleId(cfg, 'retention')).describe()).action.workflowType).toBe('applyRetention');
    const compact = await client.schedule.getHandle(resolveScheduleId(cfg, 'compact')).describe();
    expect(compact.action.workflowType).toBe('compactLake');
    expect(compact.spec.calendars?.[0].hour).toEqual([{ start: cfg.orchestration.compactHour, end: cfg.orchestration.compactHour, step: 1 }]);

    // Starting again updates in place, and keeps an operator's pause.
    await client.schedule.getHandle(resolveScheduleId(cfg, 'daily')).pause('test');
    expect((await ensureSchedules(client, cfg)).map((s) => s.outcome)).toEqual(['updated', 'updated', 'updated', 'updated', 'updated']);
    expect((await client.schedule.getHandle(resolveScheduleId(cfg, 'daily')).describe()).state.paused).toBe(true);

    const started = await triggerSchedule(client, cfg, 'hourly');
    expect(started?.workflowId.startsWith(`${cfg.orchestration.workflowIdPrefix}scheduled-hourly`)).toBe(true);
    const summary = (await client.workflow.getHandle(started!.workflowId).result()) as RunSummary;
    expect(summary.period).toBe(hour);
    expect(summary.rowCounts.events).toBe(seeded.get(hour)?.eventIds.size ?? 0);
    const run = await client.workflow.getHandle(periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', hour)).describe();
    expect(run.status.name).toBe('COMPLETED');
    expect((await manifest(hour))?.runId).toBe(summary.runId);

    // Both runs are listed with their search attributes, as the UI shows them.
    await waitFor('visibility to list the runs', async () => {
      const rows = await listRuns(client, cfg, { period: hour });
      return rows.some((r) => r.kind === 'hourly' && r.status === 'COMPLETED') && rows.some((r) => r.kind === 'scheduled-hourly' && r.status === 'COMPLETED');
    }, 15_000);
    await killWorker(worker, 'SIGTERM');
  });

  it('a worker killed mid-backfill is replaced and the backfill completes with every period published', async () => {
    const seeded = await seedRaw(cfg, { seed: 21, users: 8, startMs: DAY_START, endMs: DAY_START + 8 * 3_600_000 });
    let worker = await startWorker();
    const { handle } = await startBackfill(client, cfg, { kind: 'hourly', from: hourOf(0), to: hourOf(7), concurrency: 2 });
    const atKill = await eventually('two periods done', async () => {
      const p = await handle.query(progressQuery);
      return p.done >= 2 && p;
    }, 90_000, 100);
    await killWorker(worker, 'SIGKILL');
    expect(atKill.done).toBeLessThan(8);
    const before = await handle.describe();
    expect(before.status.name).toBe('RUNNING');

    worker = await startWorker();
    await handle.result();
    const progress = await handle.query(progressQuery);
    expect(progress).toMatchObject({ total: 8, done: 8, failed: 0, running: 0, remaining: 0 });
    for (let h = 0; h < 8; h++) {
      const m = await manifest(hourOf(h));
      expect(m?.rowCounts.events).toBe(seeded.get(hourOf(h))?.eventIds.size ?? 0);
    }
    await killWorker(worker, 'SIGTERM');
  });
});

describe('CLIs', () => {
  it('backfill refuses reversed, empty, malformed and future ranges, starting nothing', async () => {
    const future = new Date(Date.now() + 2 * 86_400_000).toISOString().slice(0, 10);
    const cases: [string[], RegExp][] = [
      [['--from', '2025-05-06', '--to', '2025-05-01'], /reversed/],
      [['--from', '', '--to', '2025-05-01'], /empty/],
      [['--from', '2025-02-30', '--to', '2025-03-01'], /not a real date/],
      [['--kind', 'hourly', '--from', '2025-05-01T7', '--to', '2025-05-01'], /malformed/],
      [['--from', '2025-05-01', '--to', future], /in the future|into the future/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli('workflows/cli/backfill.ts', args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
    }
    const started = await listRuns(client, cfg, { kind: 'backfill' });
    expect(started.filter((r) => r.workflowId.includes('2025-05-01'))).toEqual([]);
  });

  it('backfill --detach prints the Temporal UI link of what it started; runs list shows it', async () => {
    const worker = await startWorker();
    const r = await runCli('workflows/cli/backfill.ts', ['--kind', 'hourly', '--from', hourOf(8), '--to', hourOf(9), '--detach']);
    expect(r.code).toBe(0);
    const id = `${cfg.orchestration.workflowIdPrefix}backfill-hourly-${hourOf(8)}..${hourOf(9)}`;
    expect(r.stdout).toContain(`${cfg.temporal.uiUrl}/namespaces/${cfg.temporal.namespace}/workflows/${encodeURIComponent(id)}`);
    await client.workflow.getHandle(id).result();
    const list = await runCli('workflows/cli/runs.ts', ['list', '--kind', 'backfill']);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(id);
    expect(list.stdout).toMatch(/COMPLETED/);
    await killWorker(worker, 'SIGTERM');
  });
});
