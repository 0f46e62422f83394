/**
 * Backfills on the real Temporal dev server with the real activities over
 * MinIO data: bounded parallelism, continue-as-new carrying progress, an
 * accurate `progress` query, a corrupt object failing only its period (and
 * naming the object), clean cancellation, and one run per period at a time.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { lakePaths, type RunManifest } from '../../common/lake';
import { getJson, listObjects } from '../../common/lake-io';
import { failuresOf, startBackfill } from '../../workflows/cli/backfill';
import { periodWorkflowId } from '../../workflows/ids';
import type { BackfillProgress } from '../../workflows/types';
import { buildWorkflowBundle } from '../../workflows/service';
import { hourlyBatch, progressQuery } from '../../workflows/workflows';
import { isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
import { attributesOf, eventually, orchestrationOverrides, putCorruptObject, seedRaw, startOrchestration, waitFor, type Orchestration } from './workflow-support';

process.env.LOG_LEVEL ??= 'warn';

const DAY = '2025-04-02';
const DAY_START = Date.parse(`${DAY}T00:00:00Z`);
const hourOf = (h: number) => `${DAY}T${String(h).padStart(2, '0')}`;

let cfg: Config;
let client: Client;
let orchestration: Orchestration | undefined;

const manifest = (period: string) => getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', period));

beforeAll(async () => {
  quietTemporalRuntime();
  cfg = await isolatedConfig('wfbackfill', orchestrationOverrides('wfbackfill'));
  const [bundle] = await Promise.all([buildWorkflowBundle(), seedRaw(cfg, { seed: 11, users: 8, startMs: DAY_START, endMs: DAY_START + 12 * 3_600_000 })]);
  orchestration = await startOrchestration(cfg, bundle);
  client = orchestration.client;
}, 180_000);

afterAll(() => orchestration?.stop());

describe('backfill', () => {
  it('runs every period with bounded parallelism across continue-as-new, reports accurate progress, and fails only the corrupt period', async () => {
    const corruptKey = await putCorruptObject(cfg, hourOf(3));
    const { handle, range } = await startBackfill(client, cfg, { kind: 'hourly', from: hourOf(0), to: hourOf(5), concurrency: 2, periodsPerRun: 4 });
    expect(handle.workflowId).toBe(`${cfg.orchestration.workflowIdPrefix}backfill-hourly-${hourOf(0)}..${hourOf(5)}`);
    expect(range.count).toBe(6);

    const snapshots: BackfillProgress[] = [await eventually('the first progress answer', () => handle.query(progressQuery), 30_000, 50)];
    const result = handle.result().then(
      () => null,
      (e: unknown) => e,
    );
    let finished = false;
    void result.then(() => (finished = true));
    while (!finished) {
      snapshots.push(await handle.query(progressQuery));
      await new Promise((r) => setTimeout(r, 100));
    }
    const err = await result;

    // Every snapshot adds up, never exceeds the concurrency, and only moves forward.
    expect(snapshots.length).toBeGreaterThan(3);
    for (const [i, p] of snapshots.entries()) {
      expect(p.total).toBe(6);
      expect(p.done + p.failed + p.running + p.remaining).toBe(6);
      expect(p.running).toBeLessThanOrEqual(2);
      expect(p.runningPeriods).toHaveLength(p.running);
      if (i > 0) {
        expect(p.done + p.failed).toBeGreaterThanOrEqual(snapshots[i - 1].done + snapshots[i - 1].failed);
        expect(p.remaining).toBeLessThanOrEqual(snapshots[i - 1].remaining);
      }
    }
    expect(snapshots.some((p) => p.running === 2)).toBe(true);
    expect(snapshots.some((p) => p.run === 2)).toBe(true);

    // Failures are reported at the end, with the corrupt object named; the other periods were published.
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failures = failuresOf(err);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ period: hourOf(3), type: 'CorruptObjectError', objectKey: corruptKey });
    expect(failures[0].error).toContain(corruptKey);
    const final = await handle.query(progressQuery);
    expect(final).toMatchObject({ total: 6, done: 5, failed: 1, running: 0, remaining: 0, run: 2, state: 'finished' });
    for (const h of [0, 1, 2, 4, 5]) expect((await manifest(hourOf(h)))?.period).toBe(hourOf(h));
    expect(await manifest(hourOf(3))).toBeNull();

    // Continue-as-new: the latest run is not the first, and still carries the search attributes.
    const d = await handle.describe();
    expect(d.runId).not.toBe(handle.firstExecutionRunId);
    expect(attributesOf(d)).toMatchObject({ BatchKind: 'backfill', BatchPeriod: `${hourOf(0)}..${hourOf(5)}` });
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, '_staging/')).toEqual([]);
  });

  it('can be cancelled cleanly: running periods stop, nothing further starts, no staging is left', async () => {
    const { handle } = await startBackfill(client, cfg, { kind: 'hourly', from: hourOf(6), to: hourOf(11), concurrency: 1 });
    await eventually('the first period to finish', async () => (await handle.query(progressQuery)).done >= 1, 60_000, 100);
    await handle.cancel();
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect((await handle.describe()).status.name).toBe('CANCELLED');

    const published = [];
    for (let h = 6; h <= 11; h++) if (await manifest(hourOf(h))) published.push(h);
    expect(published.length).toBeGreaterThanOrEqual(1);
    expect(published.length).toBeLessThan(6);
    // No child is left running, and the interrupted one ended as cancelled, not failed.
    for (let h = 6; h <= 11; h++) {
      const id = periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', hourOf(h));
      const status = await client.workflow
        .getHandle(id)
        .describe()
        .then((x) => x.status.name)
        .catch(() => 'NOT_STARTED');
      expect(['COMPLETED', 'CANCELLED', 'NOT_STARTED']).toContain(status);
    }
    await waitFor('staging to be discarded', async () => (await listObjects(s3Client(cfg), cfg.s3.bucket, '_staging/')).length === 0, 15_000);
  });

  it('never runs the same period twice at once', async () => {
    const period = hourOf(7);
    const opts = { taskQueue: cfg.temporal.taskQueue, workflowId: periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', period), args: [period] as [string] };
    const first = await client.workflow.start(hourlyBatch, opts);
    await expect(client.workflow.start(hourlyBatch, opts)).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
    await first.result();
    // Once finished, a re-run is explicit and allowed.
    const again = await client.workflow.start(hourlyBatch, opts);
    expect((await again.result()).period).toBe(period);
  });
});
