/**
 * What only an admin key may do: pin the watermark, erase users. Every change leaves an audit
 * line naming the key by its id. Erasures run as Temporal workflows (workflows/erasure-client.ts):
 * the route starts one and answers with its request id and Temporal UI link.
 */
import type { Client } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { speedKeys } from '../../common/speed-keys';
import { connectClient } from '../../workflows/client';
import { erasureStatus, startErasure } from '../../workflows/erasure-client';
import * as S from '../schemas';
import { MAX_TIME_MS } from '../time-range';
import { GUARDED, type ServingContext } from './context';

const REQUEST_ID_PATTERN = '^er-[0-9a-f]{16}$';

const erasureProgressSchema = {
  type: ['object', 'null'],
  properties: {
    step: { type: 'string' },
    round: { type: 'integer' },
    users: { type: 'integer' },
    objectsScanned: { type: 'integer' },
    rewritten: { type: 'object', properties: { raw: { type: 'integer' }, dlq: { type: 'integer' }, published: { type: 'integer' } } },
    rowsRemoved: { type: 'integer' },
    objectsRemoved: { type: 'integer' },
    redisRemoved: { type: 'integer' },
    periods: {
      type: 'object',
      properties: {
        hourly: { type: 'object', properties: { done: { type: 'integer' }, total: { type: 'integer' } } },
        daily: { type: 'object', properties: { done: { type: 'integer' }, total: { type: 'integer' } } },
      },
    },
    userTables: { type: 'array', items: { type: 'string' } },
  },
} as const;

const erasureStartedSchema = {
  type: 'object',
  properties: {
    request_id: { type: 'string' },
    workflow_id: { type: 'string' },
    workflow_url: { type: 'string' },
    status_url: { type: 'string' },
  },
} as const;

const erasureStatusSchema = {
  type: 'object',
  properties: {
    request_id: { type: 'string' },
    workflow_id: { type: 'string' },
    workflow_url: { type: 'string' },
    state: { type: 'string', enum: ['running', 'completed', 'failed', 'cancelled', 'terminated', 'timed_out', 'continued_as_new', 'unknown'] },
    started_at: { type: 'string' },
    closed_at: { type: ['string', 'null'] },
    audit_key: { type: ['string', 'null'] },
    error: { type: ['string', 'null'] },
    progress: erasureProgressSchema,
  },
} as const;

export const adminRoutes: FastifyPluginAsync<ServingContext> = async (app, { cfg, redis, store, log, now, status }) => {
  // Connected on the first erasure request: a serving process that never gets one never needs Temporal.
  let temporal: Promise<Client> | undefined;
  const temporalClient = (): Promise<Client> =>
    (temporal ??= connectClient(cfg).catch((err: unknown) => {
      temporal = undefined;
      throw err;
    }));
  app.addHook('onClose', async () => {
    const client = await temporal?.catch(() => undefined);
    await client?.connection.close();
  });

  app.put<{ Body: { pinned_end: number | null } }>(
    '/v1/admin/watermark',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['admin'],
        summary: 'Pin the watermark (serving uses min(pin, computed)); null clears the pin. Needs an admin key.',
        body: { type: 'object', required: ['pinned_end'], additionalProperties: false, properties: { pinned_end: { type: ['integer', 'null'], minimum: 0, maximum: MAX_TIME_MS } } },
        response: { 200: { type: 'object', properties: { watermark: S.watermarkSchema } }, 400: S.errorSchema, ...GUARDED },
      },
    },
    async (req) => {
      const keyId = req.principal!.keyId;
      const previous = store.watermark().pinnedEnd;
      await store.pin(req.body.pinned_end, { keyId, requestId: req.id });
      await redis.publish(speedKeys(cfg).watermarkChannel(), JSON.stringify(store.lakeWatermark)).catch(() => 0);
      // The audit line: who (key id, never the key), what, when; the lake keeps the same record beside the pin.
      log?.warn({ audit: 'watermark.pin', keyId, requestId: req.id, pinnedEnd: req.body.pinned_end, previous, at: new Date(now()).toISOString() }, 'watermark pin changed');
      return { watermark: status.watermark() };
    },
  );

  app.post<{ Body: { users: string[] } }>(
    '/v1/admin/erasures',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['admin'],
        summary:
          'Erase users from the lake (every zone) and Redis, recompute the periods they were in, audit it (keyed hashes, never the ids). ' +
          'Starts a Temporal workflow; the same users while it runs join it. Needs an admin key.',
        body: {
          type: 'object',
          required: ['users'],
          additionalProperties: false,
          properties: { users: { type: 'array', minItems: 1, maxItems: 1000, items: { type: 'string', minLength: 1, maxLength: 128 } } },
        },
        response: { 202: erasureStartedSchema, 400: S.errorSchema, ...GUARDED },
      },
    },
    async (req, reply) => {
      const started = await startErasure(await temporalClient(), cfg, req.body.users, new Date(now()));
      // The audit line: who asked, which request, how many users; never the ids.
      log?.warn(
        { audit: 'erasure.requested', keyId: req.principal!.keyId, requestId: req.id, erasure: started.requestId, users: new Set(req.body.users).size, at: new Date(now()).toISOString() },
        'erasure requested',
      );
      return reply.code(202).send({
        request_id: started.requestId,
        workflow_id: started.workflowId,
        workflow_url: started.url,
        status_url: `/v1/admin/erasures/${started.requestId}`,
      });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/admin/erasures/:id',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['admin'],
        summary: "An erasure request's state and progress (its latest run). Needs an admin key.",
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: REQUEST_ID_PATTERN } } },
        response: { 200: erasureStatusSchema, 400: S.errorSchema, 404: S.errorSchema, ...GUARDED },
      },
    },
    async (req, reply) => {
      const s = await erasureStatus(await temporalClient(), cfg, req.params.id);
      if (!s) return reply.code(404).send({ error: 'not_found', message: `no erasure ${req.params.id}` });
      return {
        request_id: s.requestId,
        workflow_id: s.workflowId,
        workflow_url: s.url,
        state: s.state,
        started_at: s.startedAt,
        closed_at: s.closedAt,
        audit_key: s.auditKey,
        error: s.error,
        progress: s.progress,
      };
    },
  );
};
