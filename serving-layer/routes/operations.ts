/** What an operator asks the serving layer: how fresh the layers are, which alerts fire, and whether it is alive. */
import type { FastifyPluginAsync } from 'fastify';
import { readAlerts, readLive } from '../../common/speed-keys';
import { ConsumerLagMonitor } from '../consumer-lag';
import * as S from '../schemas';
import { GUARDED, type ServingContext } from './context';

export const operationRoutes: FastifyPluginAsync<ServingContext> = async (app, { cfg, redis, store, log, now, status }) => {
  // Lag of the speed and lake consumer groups, judged from here: a consumer that crash-loops cannot report its own lag.
  const consumerLag = new ConsumerLagMonitor(cfg, { log });
  app.addHook('onClose', async () => consumerLag.close());

  app.get(
    '/v1/freshness',
    {
      config: { access: 'read' },
      schema: {
        tags: ['operations'],
        summary: 'The batch watermark (what is exact) and the speed layer freshness (how live)',
        response: { 200: { type: 'object', properties: { now: { type: 'integer' }, watermark: S.watermarkSchema, freshness: S.freshnessSchema, live: { type: 'object', properties: { active_users_5m: { type: 'integer' }, open_sessions_30m: { type: 'integer' } } } } }, ...GUARDED },
      },
    },
    async () => {
      const t = now();
      const [freshness, live] = await Promise.all([status.freshness(), readLive(redis, cfg, t)]);
      return { now: t, watermark: status.watermark(), freshness, live: { active_users_5m: live.activeUsers5m, open_sessions_30m: live.openSessions30m } };
    },
  );

  app.get('/v1/alerts', { config: { access: 'read' }, schema: { tags: ['operations'], summary: 'Alerts firing now: the speed layer’s rules, and the serving layer’s (batch lag, batch sync, speed/lake consumer lag and stall, judged from Kafka)', response: { 200: S.alertsResponse, ...GUARDED } } }, async () => {
    const t = now();
    const speed = (await readAlerts(redis, cfg)).map((a) => ({ ...a, layer: 'speed' as const }));
    const serving: Array<{ rule: string; layer: 'serving'; since: number; value: number; threshold: number; message: string }> = [];
    const hourlyEnd = status.watermark().hourly_end;
    const limit = cfg.serving.batchLagAlertFraction * cfg.speed.retentionMs;
    // The speed layer drops buckets after its retention: the oldest hour the batch does not hold exactly — a gap or a
    // dirty hour below W (W no longer stops there), else W itself — is what is (about to be) uncovered.
    // From the lateness horizon, not the speed retention: an hour that fell out of the speed layer unpublished is
    // answered `none`, and the alert must keep saying so until the batch covers it.
    const gap = store.firstNotExact('hourly', t - Math.max(cfg.speed.retentionMs, cfg.batch.latenessHorizonMs));
    const behind = gap ?? hourlyEnd;
    if (behind !== null && t - behind > limit) {
      const what = gap !== null ? `hour ${new Date(gap).toISOString().slice(0, 13)} is not exact (unpublished or recomputing)` : 'batch watermark';
      serving.push({ rule: 'batch_lag', layer: 'serving', since: behind + limit, value: t - behind, threshold: limit, message: `${what}: ${Math.round((t - behind) / 60_000)} min behind; speed data expires after ${Math.round(cfg.speed.retentionMs / 60_000)} min` });
    }
    if (store.lastError !== null) serving.push({ rule: 'batch_sync', layer: 'serving', since: store.syncedAt ?? t, value: 1, threshold: 0, message: status.syncError() ?? '' });
    serving.push(...(await consumerLag.alerts(t)));
    return { alerts: [...speed, ...serving] };
  });

  app.get('/health', { config: { access: 'none' }, schema: { tags: ['operations'], summary: 'Liveness of the dependencies (no key needed)', security: [], response: { 200: { type: 'object', additionalProperties: true }, 503: { type: 'object', additionalProperties: true } } } }, async (_req, reply) => {
    const redisOk = await redis.ping().then(
      () => true,
      () => false,
    );
    const batchOk = store.syncedAt !== null && store.lastError === null;
    const ok = redisOk && batchOk;
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', redis: redisOk, batch_views: batchOk, synced_at: store.syncedAt, sync_error: status.syncError(), version: store.version });
  });
};
