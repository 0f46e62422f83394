/**
 * `npm run worker`: the batch worker (workflows/service.ts) until SIGTERM/SIGINT,
 * which let the steps in flight finish (or heartbeat their way to a retry).
 */
import { runService } from '../common/run-service';
import { startBatchWorker } from './service';

await runService({
  name: 'worker',
  component: 'batch-worker',
  description: 'The Temporal batch worker: runs hourly/daily/backfill/reconcile/compaction/retention workflows and creates their schedules.',
  help: '\nSettings (environment, defaults in common/config.ts): TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE, S3_*, REDIS_URL, BATCH_*.',
  start: ({ cfg, log }) => startBatchWorker(cfg, { log }),
  failed: 'batch worker failed',
  stopFailed: 'unclean stop; a step in flight is retried by Temporal',
});
