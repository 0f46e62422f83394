/**
 * The serving layer as one running service (used by main.ts, the demo and the
 * tests): batch store synced from the lake + pub/sub notices, and the API.
 */
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { redisClient, s3Client } from '../common/clients';
import type { Config } from '../common/config';
import { logger, type Logger } from '../common/log';
import { checkProductionSettings } from '../common/http/production';
import { BatchStore } from './batch-store';
import { buildServer } from './server';

export interface Serving {
  app: FastifyInstance;
  store: BatchStore;
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startServing(cfg: Config, opts: { log?: Logger; now?: () => number; port?: number; host?: string } = {}): Promise<Serving> {
  const log = opts.log ?? logger('serving');
  const check = checkProductionSettings('serving', cfg);
  if (check.overridden) log.warn({ problems: check.problems }, 'ALLOW_INSECURE_SETTINGS=true: starting in production with insecure settings');
  const redis: Redis = redisClient(cfg);
  const subscriber: Redis = redisClient(cfg);
  const store = await BatchStore.open(cfg, s3Client(cfg), log);
  await store.start(subscriber);
  const app = await buildServer(cfg, { redis, store, log, now: opts.now, defaultMetrics: true });
  const host = opts.host ?? cfg.serving.host;
  await app.listen({ port: opts.port ?? cfg.serving.port, host });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : cfg.serving.port;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  return {
    app,
    store,
    url,
    port,
    async stop() {
      await app.close();
      await store.close();
      redis.disconnect();
    },
  };
}
