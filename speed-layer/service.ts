/**
 * The speed layer as one running service: the consumer, the alert evaluator and
 * a small HTTP server with GET /metrics (Prometheus) and GET /health. Used by
 * main.ts and, in-process, by the integration tests.
 */
import type { Redis } from 'ioredis';
import { kafkaClient, redisClient } from '../common/clients';
import type { Config } from '../common/config';
import { logger } from '../common/log';
import { AlertEvaluator } from './alerts';
import { SpeedConsumer } from './consumer';
import { speedMetrics, type SpeedMetrics } from './metrics';
import { startStatusServer } from '../common/status-server';

const HEALTH_PROBE_MS = 1000;

export interface SpeedLayer {
  port: number;
  metrics: SpeedMetrics;
  consumer: SpeedConsumer;
  alerts: AlertEvaluator | null;
  stop(): Promise<void>;
}

/**
 * Speed keys must live until their TTL: the serving layer answers a bucket from Redis (not `none`) until
 * then, so a key evicted under memory pressure would read as a zero. Only a warning: managed Redis may
 * refuse CONFIG, and the policy is the operator's to set.
 */
async function warnIfRedisEvicts(redis: Redis, log: ReturnType<typeof logger>): Promise<void> {
  try {
    const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
    const [, maxmemory] = (await redis.config('GET', 'maxmemory')) as [string, string];
    if (policy !== 'noeviction' && Number(maxmemory) > 0) {
      log.warn({ policy, maxmemory: Number(maxmemory) }, 'redis may evict keys (maxmemory-policy is not noeviction): an evicted speed bucket would be served as zero instead of none');
    }
  } catch (err) {
    log.debug({ err: (err as Error).message }, 'could not read the redis eviction policy');
  }
}

export async function startSpeedLayer(cfg: Config, opts: { alerts?: boolean; redis?: Redis; defaultMetrics?: boolean; seekOnAssign?: boolean; checkOnReconnect?: boolean } = {}): Promise<SpeedLayer> {
  const log = logger('speed-layer');
  // Without auto-pipelining: a failing command then fails alone, as a rejected promise (see redisClient).
  const redis = opts.redis ?? redisClient(cfg, { autoPipelining: false });
  const kafka = kafkaClient(cfg, `${cfg.kafka.clientId}-speed`);
  const metrics = speedMetrics({ defaults: opts.defaultMetrics });
  const consumer = new SpeedConsumer({ cfg, kafka, redis, metrics, seekOnAssign: opts.seekOnAssign, checkOnReconnect: opts.checkOnReconnect });
  const admin = kafka.admin();
  let alerts: AlertEvaluator | null = null;

  const status = await startStatusServer({
    host: cfg.speed.host,
    port: cfg.speed.port,
    registry: metrics.registry,
    log,
    health: async () => {
      // ioredis queues commands while reconnecting; a probe must answer quickly either way.
      const redisOk = await Promise.race([
        redis.ping().then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((r) => setTimeout(() => r(false), HEALTH_PROBE_MS).unref()),
      ]);
      const degraded = consumer.degraded();
      const ok = redisOk && degraded === null;
      const reason = [...(redisOk ? [] : ['redis unreachable']), ...(degraded ? [degraded.reason] : [])].join('; ');
      return { ok, redis: redisOk, consumer: consumer.healthy, ...(ok ? {} : { reason, failing: degraded?.failing ?? [] }) };
    },
  });
  const port = status.port;

  void warnIfRedisEvicts(redis, log);
  await consumer.start();
  if (opts.alerts ?? true) {
    await admin.connect();
    alerts = new AlertEvaluator(cfg, redis, admin, metrics);
    alerts.start();
  }
  log.info({ port, topic: cfg.kafka.rawTopic, group: cfg.kafka.speedGroup, prefix: cfg.redis.keyPrefix }, 'speed layer started');

  return {
    port,
    metrics,
    consumer,
    alerts,
    async stop() {
      alerts?.stop();
      await consumer.stop();
      if (alerts) await admin.disconnect();
      await status.close();
      if (!opts.redis) redis.disconnect();
    },
  };
}
