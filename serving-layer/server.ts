/**
 * The query API and the dashboard. Every metric route declares its query and
 * reply schema and which metric it wants; the batch/speed boundary is applied
 * by `merge` alone.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import cors from '@fastify/cors';
import fastifyStatic from '@fastify/static';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { REPO_ROOT, type Config } from '../common/config';
import { ALL, BUCKET_MS, bucketStart, type Granularity } from '../common/contract';
import type { Logger } from '../common/log';
import { readAlerts, readFreshness, readLive } from '../common/speed-keys';
import type { BatchStore } from './batch-store';
import { authPlugin, KeyRing } from '../common/http/auth';
import { exposeRequestId, genReqId } from '../common/http/request-id';
import { ConsumerLagMonitor } from './consumer-lag';
import { MergeError, merge, type MetricDef, type WatermarkView } from './merge';
import {
  activeUsersMetric,
  bingeMetric,
  clicksToPlayMetric,
  dailySessionsMetric,
  eventsMetric,
  obtLevelError,
  obtMetric,
  playbackMetric,
  retentionMetric,
  topContentMetric,
  topPathsMetric,
  type BingeValue,
  type ClicksToPlayValue,
  type EventDimension,
  type EventsParams,
  type ObtDimension,
  type ObtParams,
  type ObtValue,
  type PlaybackValue,
  type RetentionValue,
  type SessionsValue,
  type Sources,
  type TopContentValue,
  type TopPathsValue,
  type UsersParams,
} from './metrics';
import * as S from './schemas';

export const PUBLIC_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'public');

export interface ServerDeps {
  redis: Redis;
  store: BatchStore;
  log?: Logger;
  now?: () => number;
  /** Collect process metrics (off in tests that build several servers). */
  defaultMetrics?: boolean;
}

/** What every keyed route may also answer: no or wrong key, over its rate, a dependency down (with a request id). */
const GUARDED = { 401: S.errorSchema, 429: S.errorSchema, 503: S.errorSchema } as const;

/** 9999-12-31T23:59:59.999Z: a time beyond it is a typo (or a fuzzer), and past 2^53 it is not even an exact integer. */
const MAX_TIME_MS = 253_402_300_799_999;

const DEFAULT_SPAN: Record<Granularity, number> = { second: 60_000, minute: 3_600_000, hour: 86_400_000, day: 7 * 86_400_000 };

function parseTime(raw: string, parameter: string): number {
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(/T.*(Z|[+-]\d{2}:\d{2})$/.test(raw) || !raw.includes('T') ? raw : `${raw}Z`);
  if (!Number.isFinite(ms) || ms > MAX_TIME_MS) throw new MergeError(parameter, `${parameter} is not a valid time: ${raw}`);
  return ms;
}

interface RangeQs {
  from?: string;
  to?: string;
  granularity: Granularity;
}

function rangeOf(qs: RangeQs, now: number): { from: number; to: number } {
  const g = qs.granularity;
  const to = qs.to !== undefined ? parseTime(qs.to, 'to') : bucketStart(now, g) + BUCKET_MS[g];
  const from = qs.from !== undefined ? parseTime(qs.from, 'from') : to - DEFAULT_SPAN[g];
  return { from, to };
}

const csv = <T extends string>(s: string | undefined): T[] => (s ? ([...new Set(s.split(','))] as T[]) : []);

class BatchCache {
  private version = -1;
  private entries = new Map<string, unknown>();
  constructor(private readonly max = 2000) {}
  get(version: number, key: string): unknown {
    if (version !== this.version) {
      this.entries.clear();
      this.version = version;
    }
    return this.entries.get(key);
  }
  set(key: string, value: unknown): void {
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, value);
  }
}

/**
 * Batch views change only when a sync publishes a new version, so a batch read
 * is cached per version: repeated dashboard queries cost a Redis round trip for
 * their speed part and nothing for their exact part.
 */
function withBatchCache<P, V>(def: MetricDef<P, V>, store: BatchStore, cache: BatchCache, speedTtlMs: number): MetricDef<P, V> {
  const withSpeed = def.speed && speedTtlMs > 0 ? { ...def, speed: withSpeedCache(def.name, def.speed, speedTtlMs) } : def;
  if (!withSpeed.batch) return withSpeed;
  const inner = withSpeed.batch;
  return {
    ...withSpeed,
    batch: {
      ...inner,
      async read(q) {
        const key = JSON.stringify([def.name, q.granularity, q.from, q.to, q.boundary, q.params]);
        const version = store.version;
        const hit = cache.get(version, key) as Awaited<ReturnType<typeof inner.read>> | undefined;
        if (hit) return hit;
        const rows = await inner.read(q);
        if (store.version === version) cache.set(key, rows);
        return rows;
      },
    },
  };
}

/**
 * Identical speed reads within a short TTL share one Redis round trip: the
 * speed layer itself is only seconds fresh, and many dashboards polling the
 * same range would otherwise multiply the per-minute key reads.
 */
function withSpeedCache<P, V>(name: string, speed: NonNullable<MetricDef<P, V>['speed']>, ttlMs: number): NonNullable<MetricDef<P, V>['speed']> {
  const entries = new Map<string, { at: number; rows: Promise<Awaited<ReturnType<typeof speed.read>>> }>();
  return {
    ...speed,
    read(q) {
      const key = JSON.stringify([name, q.granularity, q.from, q.to, q.params]);
      const t = Date.now();
      const hit = entries.get(key);
      if (hit && t - hit.at < ttlMs) return hit.rows;
      if (entries.size > 1000) for (const [k, e] of entries) if (t - e.at >= ttlMs) entries.delete(k);
      const rows = speed.read(q);
      entries.set(key, { at: t, rows });
      rows.catch(() => entries.delete(key));
      return rows;
    },
  };
}

export async function buildServer(cfg: Config, deps: ServerDeps): Promise<FastifyInstance> {
  const now = deps.now ?? Date.now;
  const { redis, store } = deps;
  const app = Fastify({
    logger: false,
    genReqId,
    trustProxy: cfg.serving.trustProxy,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: false } },
  });

  // ─── metrics ───
  const registry = new Registry();
  if (deps.defaultMetrics) collectDefaultMetrics({ register: registry });
  const httpDuration = new Histogram({
    name: 'serving_http_request_duration_seconds',
    help: 'Query API latency by route and status',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const bucketsServed = new Counter({
    name: 'serving_buckets_total',
    help: 'Buckets answered, by metric and source layer',
    labelNames: ['metric', 'source'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'serving_watermark_end_ms',
    help: 'Batch watermark applied by the merge (epoch ms; 0 = none)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      const w = store.watermark();
      this.set({ kind: 'hourly' }, w.hourly.end ?? 0);
      this.set({ kind: 'daily' }, w.daily.end ?? 0);
      this.set({ kind: 'pinned' }, w.pinnedEnd ?? 0);
    },
  });
  new Gauge({
    name: 'serving_batch_version',
    help: 'Syncs of the batch views that changed what queries see',
    registers: [registry],
    collect() {
      this.set(store.version);
    },
  });
  new Gauge({
    name: 'serving_batch_sync_ok',
    help: '1 when the last sync of the batch views succeeded',
    registers: [registry],
    collect() {
      this.set(store.lastError === null ? 1 : 0);
    },
  });
  app.addHook('onResponse', async (req, reply) => {
    httpDuration.observe({ route: req.routeOptions.url ?? 'unknown', method: req.method, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });

  // ─── plumbing: errors, CORS, rate limit, auth, OpenAPI ───
  exposeRequestId(app);
  // Lag of the speed and lake consumer groups, judged from here: a consumer that crash-loops cannot report its own lag.
  const consumerLag = new ConsumerLagMonitor(cfg, { log: deps.log });
  app.addHook('onClose', async () => consumerLag.close());
  app.setErrorHandler((err: Error & { validation?: Array<{ instancePath: string; params: Record<string, unknown>; message?: string }>; validationContext?: string; statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof MergeError) {
      const message = err.message.includes(err.parameter) ? err.message : `${err.parameter}: ${err.message}`;
      return reply.code(400).send({ error: 'bad_request', parameter: err.parameter, message });
    }
    if (err.validation) {
      const v = err.validation[0];
      const parameter =
        v.instancePath.replace(/^\//, '').split('/')[0] || String(v.params.missingProperty ?? v.params.additionalProperty ?? err.validationContext ?? 'request');
      const message = v.params.additionalProperty ? `unknown parameter ${parameter}` : `${parameter} ${v.message ?? 'is invalid'}`;
      return reply.code(400).send({ error: 'bad_request', parameter, message });
    }
    if (err.statusCode === 429) return reply.code(429).send({ error: 'rate_limited', message: err.message });
    // Fastify's own 4xx (a body that is not JSON, a wrong content type…) describe the request, not the server.
    if (err.statusCode && err.statusCode < 500 && err.code?.startsWith('FST_')) return reply.code(err.statusCode).send({ error: 'bad_request', message: err.message });
    // Anything else is ours (Redis, DuckDB, S3): the cause goes to the log under the request id, never to the caller.
    deps.log?.error({ requestId: req.id, route: req.routeOptions.url, err: err.message, stack: err.stack }, 'request failed');
    return reply
      .code(503)
      .header('retry-after', '1')
      .send({ error: 'unavailable', message: `the request could not be answered now; retry, or quote request ${req.id} to the operator`, request_id: req.id });
  });

  await app.register(cors, { origin: cfg.serving.corsOrigins.includes('*') ? '*' : cfg.serving.corsOrigins, methods: ['GET', 'PUT', 'OPTIONS'] });
  await app.register(authPlugin, {
    ring: new KeyRing([
      { keys: cfg.serving.apiKeys, scopes: ['read'] },
      { keys: cfg.serving.adminKeys, scopes: ['read', 'admin'] },
    ]),
    perKeyPerMin: cfg.serving.rateLimitPerMin,
    anonymousPerMin: cfg.serving.anonymousRateLimitPerMin,
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Clickstream query API',
        version: '1.0.0',
        description:
          'Batch views (exact) below the watermark W, speed layer (approximate, seconds fresh) above it, merged per bucket. Every bucket says its source, whether it is exact, and whether any layer covers it.',
      },
      components: { securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } } },
      security: [{ apiKey: [] }],
    },
  });

  // ─── shared response parts ───
  /**
   * A failed sync's message is S3's or DuckDB's: replies say only that it failed and
   * under which id the log has the cause (logged once per distinct failure).
   */
  let seenSyncError: { message: string; id: string } | null = null;
  const syncErrorOut = (): string | null => {
    const e = store.lastError;
    if (e === null) return null;
    if (seenSyncError?.message !== e) {
      seenSyncError = { message: e, id: randomUUID().slice(0, 8) };
      deps.log?.error({ syncErrorId: seenSyncError.id, err: e }, 'batch views could not be refreshed');
    }
    return `batch_sync_failed: the batch views could not be refreshed (serving log, syncErrorId ${seenSyncError.id})`;
  };
  const watermarkOut = () => {
    const w: WatermarkView = store.watermark();
    return {
      hourly_start: w.hourly.start,
      hourly_end: w.pinnedEnd !== null && w.hourly.end !== null ? Math.min(w.hourly.end, w.pinnedEnd) : w.hourly.end,
      daily_start: w.daily.start,
      daily_end: w.pinnedEnd !== null && w.daily.end !== null ? Math.min(w.daily.end, w.pinnedEnd) : w.daily.end,
      pinned_end: w.pinnedEnd,
      lake_hourly_end: store.lakeWatermark?.hourlyEnd ?? null,
      lake_daily_end: store.lakeWatermark?.dailyEnd ?? null,
      lake_updated_at: store.lakeWatermark?.updatedAt ?? null,
      synced_at: store.syncedAt,
      sync_error: syncErrorOut(),
    };
  };
  const freshnessOut = async () => {
    const t = now();
    const f = await readFreshness(redis, cfg);
    const hourlyEnd = watermarkOut().hourly_end;
    return {
      speed_lag_ms: f?.lastMs ?? null,
      speed_applied_at: f?.at ?? null,
      speed_age_ms: f ? t - f.at : null,
      speed_retention_ms: cfg.speed.retentionMs,
      batch_lag_ms: hourlyEnd === null ? null : t - hourlyEnd,
    };
  };

  const src: Sources = { cfg, batch: store, redis };
  const cache = new BatchCache();
  const metricNames: string[] = [];

  /** One metric route: the schema, and how the query string becomes the metric's parameters. */
  function metricRoute<Q extends RangeQs, P, V>(opts: {
    name: string;
    summary: string;
    querystring: object;
    value: object;
    def: MetricDef<P, V>;
    params: (qs: Q) => { params: P; groupBy: string[] };
  }): void {
    metricNames.push(opts.name);
    const def = withBatchCache(opts.def, store, cache, cfg.serving.speedCacheMs);
    app.get(
      `/v1/metrics/${opts.name}`,
      {
        config: { access: 'read' },
        schema: {
          tags: ['metrics'],
          summary: opts.summary,
          querystring: opts.querystring,
          response: { 200: S.mergedResponse(opts.value, opts.summary), 400: S.errorSchema, ...GUARDED },
        },
      },
      async (req) => {
        const t = now();
        const qs = req.query as Q;
        const { from, to } = rangeOf(qs, t);
        const { params, groupBy } = opts.params(qs);
        const [result, freshness] = await Promise.all([
          merge(def, { from, to, granularity: qs.granularity, params, groupBy }, { watermark: store.watermark(), now: t, maxBuckets: cfg.serving.maxBuckets }),
          freshnessOut(),
        ]);
        for (const s of ['batch', 'speed', 'none', 'recomputing'] as const) {
          const n = result.coverage[s] ?? 0;
          if (n > 0) bucketsServed.inc({ metric: opts.name, source: s }, n * result.series.length);
        }
        return { ...result, watermark: watermarkOut(), freshness };
      },
    );
  }

  type EventsQs = RangeQs & { group_by?: string; event_type?: string; device_type?: string; country?: string; app_version?: string };
  metricRoute<EventsQs, EventsParams, number>({
    name: 'events',
    summary: 'Events per bucket, optionally grouped by and filtered on event_type, device_type, country, app_version',
    querystring: S.eventsQuery,
    value: S.valueSchemas.count,
    def: eventsMetric(src),
    params: (qs) => {
      const groupBy = csv<EventDimension>(qs.group_by);
      const filters: Partial<Record<EventDimension, string>> = {};
      for (const d of ['event_type', 'device_type', 'country', 'app_version'] as const) if (qs[d] !== undefined) filters[d] = qs[d];
      return { params: { groupBy, filters }, groupBy };
    },
  });
  metricRoute<RangeQs & { device_type?: string }, UsersParams, number>({
    name: 'active_users',
    summary: 'Distinct users per bucket (HAU/DAU); speed values are HyperLogLog estimates with their error',
    querystring: S.activeUsersQuery,
    value: S.valueSchemas.count,
    def: activeUsersMetric(src),
    params: (qs) => ({ params: { deviceType: qs.device_type ?? ALL }, groupBy: [] }),
  });
  metricRoute<RangeQs, Record<string, never>, PlaybackValue>({
    name: 'playback',
    summary: 'Plays, pauses, completes, rebuffers, pause rate and completion rate (null when plays = 0)',
    querystring: S.playbackQuery,
    value: S.valueSchemas.playback,
    def: playbackMetric(src),
    params: () => ({ params: {}, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, TopContentValue>({
    name: 'top_content',
    summary: 'content_id ranked by plays per bucket',
    querystring: S.topContentQuery,
    value: S.valueSchemas.topContent,
    def: topContentMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  metricRoute<RangeQs & { device_type?: string; group_by?: string }, { deviceType: string; groupByDevice: boolean }, SessionsValue>({
    name: 'daily_sessions',
    summary: 'Daily session metrics (batch only): sessions, durations, bounce rate, events per session',
    querystring: S.dailySessionsQuery,
    value: S.valueSchemas.sessions,
    def: dailySessionsMetric(src),
    params: (qs) => ({ params: { deviceType: qs.device_type ?? ALL, groupByDevice: qs.group_by === 'device_type' }, groupBy: qs.group_by ? ['device_type'] : [] }),
  });
  metricRoute<RangeQs, Record<string, never>, RetentionValue>({
    name: 'retention',
    summary: 'Retention and churn per cohort day (batch only), as of the latest day before the watermark',
    querystring: S.dailyQuery,
    value: S.valueSchemas.retention,
    def: retentionMetric(src),
    params: () => ({ params: {}, groupBy: [] }),
  });
  metricRoute<RangeQs, Record<string, never>, ClicksToPlayValue>({
    name: 'clicks_to_play',
    summary: 'Daily histogram of clicks before the first play (batch only)',
    querystring: S.dailyQuery,
    value: S.valueSchemas.clicksToPlay,
    def: clicksToPlayMetric(src),
    params: () => ({ params: {}, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, TopPathsValue>({
    name: 'top_paths',
    summary: 'The most frequent paths to the first play per day (batch only)',
    querystring: S.topPathsQuery,
    value: S.valueSchemas.topPaths,
    def: topPathsMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  metricRoute<RangeQs & { limit: number }, { limit: number }, BingeValue>({
    name: 'binge_users',
    summary: 'Users binging per day: ≥3 completes within 4 hours',
    querystring: S.bingeQuery,
    value: S.valueSchemas.binge,
    def: bingeMetric(src),
    params: (qs) => ({ params: { limit: qs.limit }, groupBy: [] }),
  });
  type ObtQs = RangeQs & { group_by?: string; device_type?: string; app_version?: string; country?: string };
  metricRoute<ObtQs, ObtParams, ObtValue>({
    name: 'obt',
    summary: 'The one big table: daily totals by device_type, app_version, country with ALL roll-ups (batch only)',
    querystring: S.obtQuery,
    value: S.valueSchemas.obt,
    def: obtMetric(src),
    params: (qs) => {
      const groupBy = csv<ObtDimension>(qs.group_by);
      const filters: Partial<Record<ObtDimension, string>> = {};
      for (const d of ['device_type', 'app_version', 'country'] as const) if (qs[d] !== undefined) filters[d] = qs[d];
      const p = { groupBy, filters };
      const problem = obtLevelError(p);
      if (problem) throw new MergeError(groupBy.length > 0 ? 'group_by' : (Object.keys(filters)[0] ?? 'group_by'), problem);
      return { params: p, groupBy };
    },
  });

  app.get<{ Params: { metric: string } }>(
    '/v1/metrics/:metric',
    { config: { access: 'read' }, schema: { hide: true, params: { type: 'object', properties: { metric: { type: 'string' } } }, response: { 404: S.errorSchema, ...GUARDED } } },
    async (req, reply) => reply.code(404).send({ error: 'unknown_metric', metric: req.params.metric, message: `no metric named ${req.params.metric}`, known: metricNames }),
  );

  // ─── operations ───
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
      const [freshness, live] = await Promise.all([freshnessOut(), readLive(redis, cfg, t)]);
      return { now: t, watermark: watermarkOut(), freshness, live: { active_users_5m: live.activeUsers5m, open_sessions_30m: live.openSessions30m } };
    },
  );

  app.get('/v1/alerts', { config: { access: 'read' }, schema: { tags: ['operations'], summary: 'Alerts firing now: the speed layer’s rules, and the serving layer’s (batch lag, batch sync, speed/lake consumer lag and stall, judged from Kafka)', response: { 200: S.alertsResponse, ...GUARDED } } }, async () => {
    const t = now();
    const speed = (await readAlerts(redis, cfg)).map((a) => ({ ...a, layer: 'speed' as const }));
    const serving: Array<{ rule: string; layer: 'serving'; since: number; value: number; threshold: number; message: string }> = [];
    const hourlyEnd = watermarkOut().hourly_end;
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
    if (store.lastError !== null) serving.push({ rule: 'batch_sync', layer: 'serving', since: store.syncedAt ?? t, value: 1, threshold: 0, message: syncErrorOut() ?? '' });
    serving.push(...(await consumerLag.alerts(t)));
    return { alerts: [...speed, ...serving] };
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
      await redis.publish(`${cfg.redis.keyPrefix}watermark`, JSON.stringify(store.lakeWatermark)).catch(() => 0);
      // The audit line: who (key id, never the key), what, when; the lake keeps the same record beside the pin.
      deps.log?.warn({ audit: 'watermark.pin', keyId, requestId: req.id, pinnedEnd: req.body.pinned_end, previous, at: new Date(now()).toISOString() }, 'watermark pin changed');
      return { watermark: watermarkOut() };
    },
  );

  app.get('/health', { config: { access: 'none' }, schema: { tags: ['operations'], summary: 'Liveness of the dependencies (no key needed)', security: [], response: { 200: { type: 'object', additionalProperties: true }, 503: { type: 'object', additionalProperties: true } } } }, async (_req, reply) => {
    const redisOk = await redis.ping().then(
      () => true,
      () => false,
    );
    const batchOk = store.syncedAt !== null && store.lastError === null;
    const ok = redisOk && batchOk;
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', redis: redisOk, batch_views: batchOk, synced_at: store.syncedAt, sync_error: syncErrorOut(), version: store.version });
  });

  app.get('/metrics', { config: { access: 'none' }, schema: { hide: true } }, async (_req, reply: FastifyReply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });

  app.get('/openapi.json', { config: { access: 'none' }, schema: { hide: true } }, async () => app.swagger());

  // ─── dashboard ───
  await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/', index: ['index.html'] });
  await app.register(fastifyStatic, { root: path.join(REPO_ROOT, 'node_modules', 'chart.js', 'dist'), prefix: '/vendor/chart.js/', decorateReply: false });

  app.setNotFoundHandler((req: FastifyRequest, reply) => reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url}` }));
  return app;
}
