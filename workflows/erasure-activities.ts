/**
 * The activities of the erasure workflow: each one step of batch-layer/erasure, idempotent,
 * heartbeating through the batch activities' `step` wrapper (createActivities spreads them in).
 */
import type { Redis } from 'ioredis';
import { eraseFromRedis } from '../batch-layer/erasure/redis';
import {
  findErased,
  removeSuperseded,
  rewritePublished,
  rewriteRaw,
  writeErasureAudit,
  type ErasureAudit,
  type ErasurePlan,
} from '../batch-layer/erasure/lake';
import type { JobContext } from '../batch-layer/jobs';
import type { Config } from '../common/config';

export type ErasureStep = <T>(fn: (ctx: JobContext) => Promise<T>) => Promise<T>;

/** What the workflow keeps of a plan: counts and periods, not the object keys. */
export type ErasurePlanSummary = Pick<ErasurePlan, 'requestId' | 'round' | 'objectsScanned' | 'userTables' | 'hours' | 'days'> & {
  raw: number;
  dlq: number;
  published: number;
  unnamed: number;
};

export function createErasureActivities(cfg: Config, step: ErasureStep, redisOf: () => Redis) {
  return {
    async findErasedUsers(requestId: string, users: string[], round: number): Promise<ErasurePlanSummary> {
      return step(async (ctx) => {
        const p = await findErased(ctx, requestId, users, round);
        return { requestId, round, objectsScanned: p.objectsScanned, userTables: p.userTables, hours: p.hours, days: p.days, raw: p.raw.length, dlq: p.dlq.length, published: p.published.length, unnamed: p.unnamed.length };
      });
    },
    async rewriteRawWithoutUsers(requestId: string, users: string[]): Promise<{ objects: number; rows: number }> {
      return step((ctx) => rewriteRaw(ctx, requestId, users));
    },
    async rewritePublishedWithoutUsers(requestId: string, users: string[]): Promise<{ manifests: number; objects: number; rows: number; superseded: string[] }> {
      return step((ctx) => rewritePublished(ctx, requestId, users));
    },
    async eraseUsersFromRedis(users: string[]): Promise<number> {
      return step(() => eraseFromRedis(redisOf(), cfg, users));
    },
    async removeSupersededObjects(requestId: string, superseded: string[], nowMs: number): Promise<{ deleted: number; waiting: number }> {
      return step((ctx) => removeSuperseded(ctx, requestId, superseded, nowMs));
    },
    /** The settings the erasure workflow needs (workflows cannot read the config). */
    async erasureSettings(): Promise<{ graceMs: number; maxRounds: number; retentionMs: number }> {
      return { graceMs: cfg.batch.supersededGraceMs, maxRounds: cfg.erasure.maxRounds, retentionMs: cfg.speed.retentionMs };
    },
    /** Returns the audit object's key (the record itself holds the keyed hashes: it stays in the lake). */
    async writeErasureAudit(audit: Omit<ErasureAudit, 'userHashes' | 'completedAt'>, users: string[]): Promise<string> {
      return step(async (ctx) => (await writeErasureAudit(ctx, audit, users)).key);
    },
  };
}
