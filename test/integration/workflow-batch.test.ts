/**
 * The batch workflows end to end on the real Temporal dev server, running the
 * real activities (DuckDB jobs) over raw Parquet objects in MinIO: hourly,
 * daily (filling in its hours as child workflows), late-data reconciliation,
 * and bad input. Runs are found back through the client's describe/list with
 * their search attributes, as the Temporal UI shows them.
 */
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Worker, type WorkflowBundle } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { lakePaths, type RunManifest, type Watermark } from '../../common/lake';
import { DAILY_TABLES, HOURLY_TABLES } from '../../batch-layer/jobs';
import { getJson, listObjects } from '../../common/lake-io';
import { periodWorkflowId } from '../../workflows/ids';
import { batchAttributes } from '../../workflows/search-attributes';
import { buildWorkflowBundle } from '../../workflows/service';
import { applyRetention, compactLake, dailyBatch, hourlyBatch, reconcileLateData } from '../../workflows/workflows';
import { speedKeys } from '../../common/speed-keys';
import { isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
process.env.LOG_LEVEL ??= 'warn';

import { attributesOf, markDirty, orchestrationOverrides, seedRaw, startOrchestration, waitFor, type Orchestration, type SeededHour } from './workflow-support';

const DAY = '2025-03-04';
const DAY_START = Date.parse(`${DAY}T00:00:00Z`);
const HOUR = `${DAY}T05`;

let cfg: Config;
let client: Client;
let bundle: WorkflowBundle;
let orchestration: Orchestration | undefined;
let seeded: Map<string, SeededHour>;

const manifest = (kind: 'hourly' | 'daily', period: string) => getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest(kind, period));

beforeAll(async () => {
  quietTemporalRuntime();
  cfg = await isolatedConfig('wfbatch', orchestrationOverrides('wfbatch'));
  [bundle, seeded] = await Promise.all([
    buildWorkflowBundle(),
    seedRaw(cfg, { seed: 7, users: 12, startMs: DAY_START, endMs: DAY_START + 86_400_000 }),
  ]);
  orchestration = await startOrchestration(cfg, bundle);
  client = orchestration.client;
}, 180_000);

afterAll(() => orchestration?.stop());

const start = (wf: typeof hourlyBatch | typeof dailyBatch, kind: 'hourly' | 'daily', period: string) =>
  client.workflow.start(wf, {
    taskQueue: cfg.temporal.taskQueue,
    workflowId: periodWorkflowId(cfg.orchestration.workflowIdPrefix, kind, period),
    args: [period],
  });

describe('hourlyBatch', () => {
  it('publishes the hourly tables of one hour, announces the watermark, and is findable by kind and period', async () => {
    const sub = redisClient(cfg);
    const notices: Watermark[] = [];
    await sub.subscribe(speedKeys(cfg).watermarkChannel());
    sub.on('message', (_channel: string, message: string) => notices.push(JSON.parse(message) as Watermark));
    try {
      const handle = await client.workflow.start(hourlyBatch, {
        taskQueue: cfg.temporal.taskQueue,
        workflowId: periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', HOUR),
        args: [HOUR],
        typedSearchAttributes: batchAttributes('hourly', HOUR),
        memo: { kind: 'hourly', period: HOUR },
      });
      const summary = await handle.result();
      expect(handle.workflowId).toBe(`${cfg.orchestration.workflowIdPrefix}hourly-${HOUR}`);
      expect(summary.period).toBe(HOUR);
      expect(summary.rowCounts.events).toBe(seeded.get(HOUR)!.eventIds.size);

      const m = await manifest('hourly', HOUR);
      expect(m?.runId).toBe(summary.runId);
      expect(Object.keys(m!.outputs).sort()).toEqual(HOURLY_TABLES.map((t) => t.table).sort());
      for (const key of Object.values(m!.outputs)) expect((await listObjects(s3Client(cfg), cfg.s3.bucket, key)).map((o) => o.key)).toEqual([key]);
      expect(await listObjects(s3Client(cfg), cfg.s3.bucket, '_staging/')).toEqual([]);

      await waitFor('the watermark notice', async () => notices.length > 0, 10_000);
      expect(notices.at(-1)!.hourlyEnd).toBe(Date.parse(`${HOUR}:00:00Z`) + 3_600_000);

      const d = await handle.describe();
      expect(d.status.name).toBe('COMPLETED');
      expect(attributesOf(d)).toMatchObject({ BatchKind: 'hourly', BatchPeriod: HOUR });
      expect(await d.memo).toMatchObject({ kind: 'hourly', period: HOUR });
    } finally {
      sub.disconnect();
    }
  });

  it('refuses a malformed hour and an hour in the future, without retrying', async () => {
    for (const bad of ['2025-03-04T24', '2025-3-04T01', new Date(Date.now() + 3_600_000).toISOString().slice(0, 13)]) {
      const err = await start(hourlyBatch, 'hourly', bad)
        .then((h) => h.result())
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const cause = (err as WorkflowFailedError).cause;
      expect(cause).toBeInstanceOf(ApplicationFailure);
      expect((cause as ApplicationFailure).type).toBe('InvalidPeriodError');
      expect(cause!.message).toMatch(/malformed|in the future/);
    }
  });
});

describe('dailyBatch', () => {
  it('runs the missing hours of its day as child workflows, then the shards, and publishes the daily tables', async () => {
    const handle = await start(dailyBatch, 'daily', DAY);
    const summary = await handle.result();
    expect(summary.shards).toBe(2);
    const m = await manifest('daily', DAY);
    expect(m?.runId).toBe(summary.runId);
    expect(Object.keys(m!.outputs).sort()).toEqual(DAILY_TABLES.map((t) => t.table).sort());
    const expectedEvents = [...seeded.values()].reduce((n, h) => n + h.eventIds.size, 0);
    expect(m!.rowCounts.processed_events).toBe(expectedEvents);

    // Every hour of the day was published by its own hourly run; the one published before was run again only if needed.
    for (let h = 0; h < 24; h++) {
      const hour = `${DAY}T${String(h).padStart(2, '0')}`;
      expect((await manifest('hourly', hour))?.period).toBe(hour);
    }
    const child = await client.workflow.getHandle(periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', `${DAY}T13`)).describe();
    expect(child.status.name).toBe('COMPLETED');
    expect(child.parentExecution?.workflowId).toBe(handle.workflowId);
    expect(attributesOf(child)).toMatchObject({ BatchKind: 'hourly', BatchPeriod: `${DAY}T13` });
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, '_staging/')).toEqual([]);

    // The workflow code is deterministic: its recorded history replays without a divergence.
    const history = await handle.fetchHistory();
    await Worker.runReplayHistory({ workflowBundle: bundle }, history, handle.workflowId);
  });
});

describe('reconcileLateData', () => {
  it('re-runs the hours and days that late data made dirty, and clears their markers', async () => {
    const late = `${DAY}T09`;
    const before = await manifest('hourly', late);
    const dayBefore = await manifest('daily', DAY);
    const extra = await seedRaw(cfg, { seed: 99, users: 3, startMs: Date.parse(`${late}:00:00Z`), endMs: Date.parse(`${late}:00:00Z`) + 3_600_000, offsetBase: 1_000_000 });
    await markDirty(cfg, late);

    const result = await client.workflow.execute(reconcileLateData, {
      taskQueue: cfg.temporal.taskQueue,
      workflowId: `${cfg.orchestration.workflowIdPrefix}reconcile-test`,
    });
    expect(result.hourly.done).toEqual([late]);
    expect(result.daily.done).toEqual([DAY]);
    expect(result.hourly.failures).toEqual([]);

    const after = await manifest('hourly', late);
    expect(after!.runId).not.toBe(before!.runId);
    expect(after!.rowCounts.events).toBe(before!.rowCounts.events + extra.get(late)!.eventIds.size);
    const dayAfter = await manifest('daily', DAY);
    expect(dayAfter!.runId).not.toBe(dayBefore!.runId);
    expect(dayAfter!.rowCounts.processed_events).toBe(dayBefore!.rowCounts.processed_events + extra.get(late)!.eventIds.size);
    // A cleared marker stays as a tombstone (S3 has no conditional delete; see DirtyMarker): none is open.
    const markers = await listObjects(s3Client(cfg), cfg.s3.bucket, '_manifests/dirty/');
    const open = await Promise.all(markers.map(async (o) => (await getJson<{ clearedAt?: number }>(s3Client(cfg), cfg.s3.bucket, o.key))?.clearedAt === undefined));
    expect(open.filter(Boolean)).toEqual([]);
  });
});

describe('compactLake and applyRetention', () => {
  it('compacts a day\'s raw objects without changing what an hour computes', async () => {
    // The late-data hour: its first wave and the late wave are separate objects.
    const hour = `${DAY}T09`;
    const rawBefore = await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawHourPrefix(hour));
    expect(rawBefore.length).toBeGreaterThan(1);
    const eventsBefore = (await manifest('hourly', hour))!.rowCounts.events;

    const result = await client.workflow.execute(compactLake, {
      taskQueue: cfg.temporal.taskQueue,
      workflowId: `${cfg.orchestration.workflowIdPrefix}compact-${DAY}`,
      args: [DAY],
    });
    expect(result.hoursCompacted).toBeGreaterThan(0);
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawHourPrefix(hour))).toHaveLength(1);
    const rerun = await client.workflow.execute(hourlyBatch, {
      taskQueue: cfg.temporal.taskQueue,
      workflowId: periodWorkflowId(cfg.orchestration.workflowIdPrefix, 'hourly', hour),
      args: [hour],
    });
    expect(rerun.rowCounts.events).toBe(eventsBefore);
  });

  it('removes raw days older than the configured age once their daily run is published', async () => {
    const result = await client.workflow.execute(applyRetention, {
      taskQueue: cfg.temporal.taskQueue,
      workflowId: `${cfg.orchestration.workflowIdPrefix}retention-test`,
    });
    expect(result.deletedDays).toContain(DAY);
    // The same run collects superseded batch outputs, but only after their grace period: the hour
    // re-run above left its previous run's objects, which a reader of the old manifest may still fetch.
    expect(result.supersededRuns).toMatchObject({ deleted: 0 });
    expect(result.supersededRuns!.waiting).toBeGreaterThan(0);
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawDayPrefix(DAY))).toEqual([]);
    // The batch views stay.
    expect((await manifest('daily', DAY))?.period).toBe(DAY);
  });
});
