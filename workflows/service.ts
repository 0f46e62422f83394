/**
 * The batch worker as one running service (used by worker.ts and, in-process,
 * by the tests): the batch workflows and activities on the task queue from
 * config, the schedules made sure of, and /metrics and /health.
 *
 * Scale out by starting more workers on more machines: they share the task
 * queue, and per-user daily work fans out as shard activities across them.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import type { Config } from '../common/config';
import { logger, type Logger } from '../common/log';
import { createActivities } from './activities';
import { connectClient } from './client';
import { ensureSchedules, type EnsuredSchedule } from './schedules';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { startStatusServer } from '../common/status-server';
import type { RunningService } from '../common/run-service';

export const WORKFLOWS_PATH = fileURLToPath(new URL('./workflows.ts', import.meta.url));

/** Bundling runs webpack (seconds of CPU): build once per process and share it between workers. */
export async function buildWorkflowBundle(): Promise<WorkflowBundle> {
  return bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietBundlerLogger });
}

const bundlerLog = () => logger('workflow-bundler');
const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string, meta?: Record<string, unknown>) => bundlerLog().warn(meta ?? {}, message),
  error: (message: string, meta?: Record<string, unknown>) => bundlerLog().error(meta ?? {}, message),
};

/** Prometheus metrics of the activities a worker runs: every batch step, by name and outcome. */
function instrument<T extends Record<string, (...args: never[]) => Promise<unknown>>>(activities: T, registry: Registry): T {
  const runs = new Counter({ name: 'batch_activity_runs_total', help: 'Activity executions by name and outcome', labelNames: ['activity', 'outcome'] as const, registers: [registry] });
  const seconds = new Histogram({
    name: 'batch_activity_seconds',
    help: 'Activity duration by name',
    labelNames: ['activity'] as const,
    buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900],
    registers: [registry],
  });
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    wrapped[name] = async (...args: never[]) => {
      const stop = seconds.startTimer({ activity: name });
      try {
        const out = await fn(...args);
        runs.inc({ activity: name, outcome: 'completed' });
        return out;
      } catch (err) {
        runs.inc({ activity: name, outcome: 'failed' });
        throw err;
      } finally {
        stop();
      }
    };
  }
  return wrapped as T;
}

export interface BatchWorker {
  worker: Worker;
  schedules: EnsuredSchedule[];
  /** Runs until shutdown() (or SIGINT/SIGTERM), then releases the connections. */
  run(): Promise<void>;
  shutdown(): void;
}

export async function createBatchWorker(
  cfg: Config,
  opts: { bundle?: WorkflowBundle; schedules?: boolean; registry?: Registry } = {},
): Promise<BatchWorker> {
  const log = logger('batch-worker');
  const connection = await NativeConnection.connect({ address: cfg.temporal.address });
  const created = createActivities(cfg);
  const close = created.close;
  const activities = opts.registry ? instrument(created.activities, opts.registry) : created.activities;
  const o = cfg.orchestration;
  const worker = await Worker.create({
    connection,
    namespace: cfg.temporal.namespace,
    taskQueue: cfg.temporal.taskQueue,
    workflowBundle: opts.bundle ?? (await buildWorkflowBundle()),
    activities,
    maxConcurrentActivityTaskExecutions: o.maxConcurrentActivities,
    maxConcurrentWorkflowTaskExecutions: o.maxConcurrentWorkflowTasks,
    maxConcurrentLocalActivityExecutions: 10,
    // A step in flight gets this long to notice the shutdown (it heartbeats) before it is abandoned to a retry.
    shutdownGraceTime: '10 seconds',
  });
  let schedules: EnsuredSchedule[] = [];
  if (opts.schedules ?? o.createSchedules) {
    const client = await connectClient(cfg);
    try {
      schedules = await ensureSchedules(client, cfg);
    } finally {
      await client.connection.close();
    }
    for (const s of schedules) log.info({ schedule: s.scheduleId, outcome: s.outcome, url: s.url }, 'schedule ready');
  }
  return {
    worker,
    schedules,
    async run() {
      try {
        await worker.run();
      } finally {
        await close();
        await connection.close();
      }
    },
    shutdown: () => worker.shutdown(),
  };
}

/**
 * A worker with its status server: /health is 200 while the worker polls. `done`
 * settles when the worker stops (after `stop()`, or by itself on a fatal error).
 */
export async function startBatchWorker(cfg: Config, opts: { log?: Logger } = {}): Promise<RunningService & { worker: BatchWorker; port: number }> {
  const log = opts.log ?? logger('batch-worker');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const bw = await createBatchWorker(cfg, { registry });
  const state = new Gauge({ name: 'batch_worker_running', help: '1 while the worker polls its task queue', registers: [registry] });
  state.set(1);
  const status = await startStatusServer({
    host: cfg.orchestration.workerHost,
    port: cfg.orchestration.workerPort,
    registry,
    log,
    health: () => ({ ok: bw.worker.getState() === 'RUNNING', state: bw.worker.getState(), taskQueue: cfg.temporal.taskQueue }),
  });
  log.info(
    {
      taskQueue: cfg.temporal.taskQueue,
      namespace: cfg.temporal.namespace,
      maxConcurrentActivities: cfg.orchestration.maxConcurrentActivities,
      ui: `${cfg.temporal.uiUrl}/namespaces/${cfg.temporal.namespace}/workflows`,
      status: `http://127.0.0.1:${status.port}/health`,
    },
    'batch worker running',
  );
  const done = (async () => {
    try {
      await bw.run();
    } finally {
      state.set(0);
      await status.close();
    }
    log.info('batch worker stopped');
  })();
  return {
    worker: bw,
    port: status.port,
    done,
    async stop() {
      // Temporal's runtime also shuts its workers down on SIGINT/SIGTERM: whichever comes first does it.
      if (bw.worker.getState() === 'RUNNING') bw.shutdown();
      await done;
    },
  };
}
