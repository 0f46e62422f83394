/**
 * The collector: HTTP in, Kafka out. An event is answered "accepted" only after
 * Kafka acknowledged it (acks=all); invalid events go to the dead-letter topic
 * with their original text and a reason from the contract's taxonomy. This file
 * is the HTTP side (content types, errors, auth, OpenAPI, health); what happens
 * to the events of a POST is ingest.ts, step by step.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance, type RawServerDefault } from 'fastify';
import type { Config } from '../../common/config';
import { SCHEMA_VERSIONS } from '../../common/contract';
import { authPlugin, KeyRing } from '../../common/http/auth';
import { checkProductionSettings } from '../../common/http/production';
import { rateLimitPlugin } from '../../common/http/rate-limit';
import { exposeRequestId, genReqId } from '../../common/http/request-id';
import { logger, type Logger } from '../../common/log';
import { Ingest } from './ingest';
import { collectorMetrics, type CollectorMetrics } from './metrics';
import { KafkaSink, type EventSink } from './sink';

export interface CollectorDeps {
  /** Where records go; defaults to Kafka. Unit tests pass a fake. */
  sink?: EventSink;
  log?: Logger;
  /** The collector's clock (received_at, the future-timestamp rule). */
  now?: () => number;
  /** Also export Node process metrics (the long-running process does; tests need not). */
  defaultMetrics?: boolean;
}

export type CollectorApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

export interface Collector {
  app: CollectorApp;
  sink: EventSink;
  metrics: CollectorMetrics;
  /** Connect to Kafka in the background and listen; resolves to the address (e.g. http://127.0.0.1:8080). */
  start(): Promise<string>;
  /** Stop taking requests, answer those in flight, flush, disconnect. */
  stop(): Promise<void>;
}

const resultSchema = {
  type: 'object',
  required: ['index', 'event_id', 'status'],
  properties: {
    index: { type: 'integer' },
    event_id: { type: ['string', 'null'] },
    status: { type: 'string', enum: ['accepted', 'rejected'] },
    reason: { type: 'string' },
    detail: { type: 'string' },
  },
} as const;

const replySchema = {
  type: 'object',
  required: ['accepted', 'rejected', 'results'],
  properties: {
    accepted: { type: 'integer' },
    rejected: { type: 'integer' },
    results: { type: 'array', items: resultSchema },
  },
} as const;

const errorSchema = {
  type: 'object',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    line: { type: 'integer' },
    column: { type: 'integer' },
    position: { type: 'integer' },
    limit: { type: 'integer' },
    retry_after_s: { type: 'integer' },
    request_id: { type: 'string' },
  },
} as const;

const healthSchema = {
  type: 'object',
  required: ['status', 'kafka'],
  properties: {
    status: { type: 'string', enum: ['ok', 'unavailable'] },
    kafka: { type: 'string' },
    in_flight_events: { type: 'integer' },
    in_flight_bytes: { type: 'integer' },
  },
} as const;

/** The request body as the OpenAPI document shows it: one event of any supported schema_version, or an array of them. */
function eventsBodyDoc(maxEvents: number) {
  const event = { anyOf: Object.values(SCHEMA_VERSIONS).map(({ schema: { $id: _id, ...s } }) => s) };
  return { oneOf: [event, { type: 'array', minItems: 1, maxItems: maxEvents, items: event }] };
}

export function buildCollector(cfg: Config, deps: CollectorDeps = {}): Collector {
  const c = cfg.collector;
  const log = deps.log ?? logger('collector');
  const now = deps.now ?? Date.now;
  const sink = deps.sink ?? new KafkaSink(cfg, log);
  const metrics = collectorMetrics({ defaultMetrics: deps.defaultMetrics });
  const ingest = new Ingest({ cfg, sink, metrics, now });

  sink.onFlush = (info) => {
    metrics.produceLatency.observe({ outcome: info.error ? 'error' : 'ok' }, info.ms / 1000);
    if (!info.error) metrics.produceBatch.observe(info.messages);
  };

  const app = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: c.maxBodyBytes,
    return503OnClosing: true,
    genReqId,
    trustProxy: c.trustProxy,
  });
  exposeRequestId(app);

  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ['application/json', 'application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/json-seq'],
    { parseAs: 'string', bodyLimit: c.maxBodyBytes },
    (_req, body, done) => done(null, body),
  );

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({
        error: 'body_too_large',
        message: `request body exceeds the limit of ${c.maxBodyBytes} bytes (COLLECTOR_MAX_BODY_BYTES); split it into smaller batches`,
        limit: c.maxBodyBytes,
      });
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({
        error: 'unsupported_media_type',
        message: 'Content-Type must be application/json (one event or an array) or application/x-ndjson (one event per line)',
      });
    }
    const status = err.statusCode ?? 500;
    if (status < 500 && err.code?.startsWith('FST_')) return reply.code(status).send({ error: 'bad_request', message: err.message });
    // Ours, not the caller's: the cause goes to the log under the request id, the reply says only that.
    req.log.error({ err, requestId: req.id }, 'collector request failed');
    return reply.code(503).header('retry-after', String(c.retryAfterSec)).send({
      error: 'unavailable',
      message: `the request could not be handled; whether its events were stored is unknown, and retrying is safe (events are de-duplicated by event_id). Quote request ${req.id} to the operator.`,
      request_id: req.id,
      retry_after_s: c.retryAfterSec,
    });
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.requests.inc({ route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
  });

  const keys = new KeyRing([{ keys: c.apiKeys, scopes: ['ingest'] }]);
  app.register(rateLimitPlugin, { ring: keys, bearer: true, perKeyPerMin: c.rateLimitPerMin, anonymousPerMin: c.anonymousRateLimitPerMin });
  app.register(authPlugin, {
    ring: keys,
    bearer: true,
    challenge: true,
    describe: { ingest: 'an API key is required: header x-api-key or Authorization: Bearer <key>' },
  });
  app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Clickstream collector',
        version: '1.0.0',
        description:
          'POST events (one JSON object, a JSON array, NDJSON or RFC 7464 JSON text sequences). Each event is answered accepted (acknowledged by Kafka) or rejected (dead-lettered with a reason).',
      },
      components: { securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } } },
    },
    // The document describes the events the contract accepts; the route itself validates nothing up front, since
    // an invalid event must be answered per event and dead-lettered with its reason, not refused as a whole.
    transform: ({ schema, url, route }) => (url === '/v1/events' && route.method === 'POST' ? { schema: { ...schema, body: eventsBodyDoc(c.maxBatchEvents) }, url } : { schema, url }),
  });
  app.register(async (routes) => {
    routes.post(
      '/v1/events',
      {
        // Checked on the route, before the body is read: a caller without a key must not cost a megabyte of parsing.
        config: { access: 'ingest' },
        schema: {
          summary: 'Send events',
          security: [{ apiKey: [] }],
          consumes: ['application/json', 'application/x-ndjson', 'application/json-seq'],
          response: { 200: replySchema, 400: errorSchema, 401: errorSchema, 413: errorSchema, 415: errorSchema, 429: errorSchema, 503: errorSchema },
        },
      },
      ingest.handle,
    );
  });

  app.get('/health', { config: { access: 'none' }, schema: { summary: 'Whether Kafka takes writes', response: { 200: healthSchema, 503: healthSchema } } }, async (_req, reply) => {
    const state = await sink.check(5000);
    return reply
      .code(state === 'up' ? 200 : 503)
      .send({ status: state === 'up' ? 'ok' : 'unavailable', kafka: state, in_flight_events: ingest.inFlightEvents, in_flight_bytes: ingest.inFlightBytes });
  });

  app.get('/openapi.json', { config: { access: 'none' }, schema: { hide: true } }, async () => app.swagger());

  app.get('/metrics', { config: { access: 'none' }, schema: { hide: true } }, async (_req, reply) => {
    metrics.kafkaUp.set(sink.state === 'up' ? 1 : 0);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return {
    app,
    sink,
    metrics,
    async start() {
      const check = checkProductionSettings('collector', cfg);
      if (check.overridden) log.warn({ problems: check.problems }, 'ALLOW_INSECURE_SETTINGS=true: starting in production with insecure settings');
      sink.start();
      return app.listen({ host: c.host, port: c.port });
    },
    async stop() {
      await app.close();
      await sink.close();
    },
  };
}
