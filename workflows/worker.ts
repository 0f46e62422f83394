/**
 * The batch worker: runs the batch workflows and activities on the task queue
 * from config, and makes sure the schedules exist when it starts.
 *
 *   npm run worker
 *
 * Scale out by starting more workers on more machines: they share the task
 * queue, and per-user daily work fans out as shard activities across them.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import { config, type Config } from '../common/config';
import { logger } from '../common/log';
import { createActivities } from './activities';
import { connectClient, isMain } from './client';
import { ensureSchedules, type EnsuredSchedule } from './schedules';
import { Command } from 'commander';

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

export interface BatchWorker {
  worker: Worker;
  schedules: EnsuredSchedule[];
  /** Runs until shutdown() (or SIGINT/SIGTERM), then releases the connections. */
  run(): Promise<void>;
  shutdown(): void;
}

export async function createBatchWorker(cfg: Config, opts: { bundle?: WorkflowBundle; schedules?: boolean } = {}): Promise<BatchWorker> {
  const log = logger('batch-worker');
  const connection = await NativeConnection.connect({ address: cfg.temporal.address });
  const { activities, close } = createActivities(cfg);
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

async function main(): Promise<void> {
  const cfg = config();
  const log = logger('batch-worker');
  const bw = await createBatchWorker(cfg);
  log.info(
    {
      taskQueue: cfg.temporal.taskQueue,
      namespace: cfg.temporal.namespace,
      maxConcurrentActivities: cfg.orchestration.maxConcurrentActivities,
      ui: `${cfg.temporal.uiUrl}/namespaces/${cfg.temporal.namespace}/workflows`,
    },
    'batch worker running',
  );
  await bw.run();
  log.info('batch worker stopped');
}

if (isMain(import.meta.url)) {
  new Command('worker')
    .description('The Temporal batch worker: runs hourly/daily/backfill/reconcile/compaction/retention workflows and creates their schedules.')
    .addHelpText('after', '\nSettings (environment, defaults in common/config.ts): TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE, S3_*, REDIS_URL, BATCH_*.')
    .parse();
  main().catch((err: unknown) => {
    logger('batch-worker').fatal({ err }, 'batch worker failed');
    process.exit(1);
  });
}
