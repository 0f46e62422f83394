/**
 * GET /v1/users/{user_id}/features: one user's real-time features (METRICS.md "User features"), a
 * feature-store style read for models and the dashboard's user lookup. The id is validated by its schema;
 * the speed layer's key names encode it (common/speed-keys.ts).
 */
import type { FastifyPluginAsync } from 'fastify';
import { userFeaturesReader } from '../metrics';
import * as S from '../schemas';
import { GUARDED, type ServingContext } from './context';

export const userRoutes: FastifyPluginAsync<ServingContext> = async (app, ctx) => {
  const { cfg, redis, store, now } = ctx;
  const read = userFeaturesReader({ cfg, redis, batch: store }, () => store.watermark());
  read.index.warm();
  app.get<{ Params: { user_id: string } }>(
    '/v1/users/:user_id/features',
    {
      config: { access: 'read' },
      schema: {
        tags: ['users'],
        summary: "One user's real-time features: events and plays in the last 5 min / 1 h / 24 h, watch time, current session, last content, binge state, days active in the last 28, first seen",
        params: S.userFeaturesParams,
        response: { 200: S.userFeaturesResponse, 400: S.errorSchema, 404: S.errorSchema, ...GUARDED },
      },
    },
    async (req, reply) => {
      const features = await read(req.params.user_id, now());
      if (features === null) {
        return reply.code(404).send({
          error: 'unknown_user',
          message: `no events of user ${req.params.user_id} in the speed layer (the last ${Math.round(cfg.speed.retentionMs / 3_600_000)} h after their last event) nor in the published batch days`,
        });
      }
      return features;
    },
  );
};
