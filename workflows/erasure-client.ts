/**
 * Starting an erasure and reading its state, for `npm run erase` and the serving layer's
 * admin routes. Workflow and query by name with type-only imports, so the serving layer
 * never loads the workflow code.
 */
import { WorkflowNotFoundError, type Client, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { checkUsers, erasureRequestId } from '../batch-layer/erasure/lake';
import type { Config } from '../common/config';
import { workflowLink } from './client';
import { erasureWorkflowId } from './ids';
import { batchAttributes } from './search-attributes';
import type { ErasureProgress } from './types';
import type { ErasureResult, eraseUsers } from './workflows';

export interface StartedErasure {
  requestId: string;
  workflowId: string;
  url: string;
  handle: WorkflowHandleWithFirstExecutionRunId<typeof eraseUsers>;
}

/** Starts the erasure workflow (one per set of users: a repeated request joins the running one). */
export async function startErasure(client: Client, cfg: Config, users: readonly string[], now = new Date()): Promise<StartedErasure> {
  const ids = checkUsers(users);
  const requestId = erasureRequestId(cfg.erasure.auditKey, ids);
  const workflowId = erasureWorkflowId(cfg.orchestration.workflowIdPrefix, requestId);
  const handle = await client.workflow.start<typeof eraseUsers>('eraseUsers', {
    taskQueue: cfg.temporal.taskQueue,
    workflowId,
    args: [{ requestId, users: ids, requestedAt: now.toISOString() }],
    // The same users again while it runs joins that run; once it has finished, a new run (new data may have come).
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    // BatchKind `erasure`, BatchPeriod the request id: the Temporal UI and `npm run runs` find it.
    typedSearchAttributes: batchAttributes('erasure', requestId),
    memo: { requestId, users: ids.length },
  });
  return { requestId, workflowId, url: workflowLink(cfg, workflowId), handle };
}

export type ErasureState = 'running' | 'completed' | 'failed' | 'cancelled' | 'terminated' | 'timed_out' | 'continued_as_new' | 'unknown';

export interface ErasureStatus {
  requestId: string;
  workflowId: string;
  url: string;
  state: ErasureState;
  startedAt: string;
  closedAt: string | null;
  progress: ErasureProgress | null;
  /** The audit record's key, once finished. */
  auditKey: string | null;
  error: string | null;
}

const REQUEST_ID = /^er-[0-9a-f]{16}$/;

export function isErasureRequestId(id: string): boolean {
  return REQUEST_ID.test(id);
}

/** The state of the latest run of a request, or null when there is none. */
export async function erasureStatus(client: Client, cfg: Config, requestId: string): Promise<ErasureStatus | null> {
  if (!isErasureRequestId(requestId)) return null;
  const workflowId = erasureWorkflowId(cfg.orchestration.workflowIdPrefix, requestId);
  const handle = client.workflow.getHandle<typeof eraseUsers>(workflowId);
  let d;
  try {
    d = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
  const state = (d.status.name.toLowerCase() as ErasureState) ?? 'unknown';
  let progress: ErasureProgress | null = null;
  let auditKey: string | null = null;
  let error: string | null = null;
  if (state === 'completed') {
    const result = (await handle.result()) as ErasureResult;
    progress = result.progress;
    auditKey = result.auditKey;
  } else if (state === 'running') {
    // Before the first workflow task has run there is no handler yet; with no worker polling, a query
    // waits for one: a status answer does not (found by the fuzzer: a 30 s read timeout).
    // A workflow whose first task no worker has completed yet (history: started, task scheduled[, task started]) has no handler to ask.
    progress = d.historyLength < 4 ? null : await client.withDeadline(Date.now() + 2_000, () => handle.query<ErasureProgress>('erasureProgress')).catch(() => null);
  } else {
    error = await handle.result().then(
      () => null,
      (err: unknown) => {
        let e = err as { message?: string; cause?: unknown };
        while (e?.cause) e = e.cause as typeof e;
        return e?.message ?? String(err);
      },
    );
  }
  return {
    requestId,
    workflowId,
    url: workflowLink(cfg, workflowId, d.runId),
    state,
    startedAt: d.startTime.toISOString(),
    closedAt: d.closeTime?.toISOString() ?? null,
    progress,
    auditKey,
    error,
  };
}
