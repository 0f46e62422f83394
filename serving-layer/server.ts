/**
 * The query API and the dashboard, assembled from plugins (plugins/: errors,
 * Prometheus, OpenAPI; common/http/: rate limit, auth, request ids) and
 * route files (routes/: metrics, operations, admin, dashboard), the layout of
 * fastify's own demo application.
 *
 * Registered explicitly, not with @fastify/autoload: the order is part of the
 * contract (the rate limit, auth and swagger act through `onRoute`, so they come before
 * every route), and the routes' options are typed where they are passed.
 */
import cors from '@fastify/cors';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Config } from '../common/config';
import { authPlugin, KeyRing } from '../common/http/auth';
import { rateLimitPlugin } from '../common/http/rate-limit';
import { exposeRequestId, genReqId } from '../common/http/request-id';
import type { Logger } from '../common/log';
import type { BatchStore } from './batch-store';
import { errorsPlugin } from './plugins/errors';
import { openapiPlugin } from './plugins/openapi';
import { prometheusPlugin, servingMetrics } from './plugins/prometheus';
import { adminRoutes } from './routes/admin';
import type { ServingContext } from './routes/context';
import { dashboardRoutes } from './routes/dashboard';
import { metricRoutes } from './routes/metrics';
import { operationRoutes } from './routes/operations';
import { userRoutes } from './routes/users';
import { ServingStatus } from './status';

export interface ServerDeps {
  redis: Redis;
  store: BatchStore;
  log?: Logger;
  now?: () => number;
  /** Collect process metrics (off in tests that build several servers). */
  defaultMetrics?: boolean;
}

export async function buildServer(cfg: Config, deps: ServerDeps): Promise<FastifyInstance> {
  const now = deps.now ?? Date.now;
  const { redis, store, log } = deps;
  const app = Fastify({
    logger: false,
    genReqId,
    trustProxy: cfg.serving.trustProxy,
    // A path parameter may be a whole user_id (128 characters, the contract's bound); fastify's default is 100.
    routerOptions: { maxParamLength: 256 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: false } },
  });
  const metrics = servingMetrics(store, { defaultMetrics: deps.defaultMetrics });
  const ctx: ServingContext = { cfg, redis, store, log, now, metrics, status: new ServingStatus(cfg, store, redis, now, log) };

  // Every scope: request ids, latency, error and 404 replies, CORS, keys and rate limits, the OpenAPI document.
  exposeRequestId(app);
  await app.register(prometheusPlugin, { metrics });
  await app.register(errorsPlugin, { log });
  await app.register(cors, { origin: cfg.serving.corsOrigins.includes('*') ? '*' : cfg.serving.corsOrigins, methods: ['GET', 'PUT', 'OPTIONS'] });
  const ring = new KeyRing([
    { keys: cfg.serving.apiKeys, scopes: ['read'] },
    { keys: cfg.serving.adminKeys, scopes: ['read', 'admin'] },
  ]);
  await app.register(rateLimitPlugin, { ring, perKeyPerMin: cfg.serving.rateLimitPerMin, anonymousPerMin: cfg.serving.anonymousRateLimitPerMin });
  await app.register(authPlugin, { ring });
  await app.register(openapiPlugin);

  // The routes, each file in its own scope.
  await app.register(metricRoutes, ctx);
  await app.register(userRoutes, ctx);
  await app.register(operationRoutes, ctx);
  await app.register(adminRoutes, ctx);
  await app.register(dashboardRoutes);
  return app;
}
