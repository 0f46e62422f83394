/** What only an admin key may do: pin the watermark. Every change leaves an audit line naming the key by its id. */
import type { FastifyPluginAsync } from 'fastify';
import { speedKeys } from '../../common/speed-keys';
import * as S from '../schemas';
import { MAX_TIME_MS } from '../time-range';
import { GUARDED, type ServingContext } from './context';

export const adminRoutes: FastifyPluginAsync<ServingContext> = async (app, { cfg, redis, store, log, now, status }) => {
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
};
