/**
 * The collector: HTTP in, Kafka out. An event is answered "accepted" only after
 * Kafka acknowledged it (acks=all); invalid events go to the dead-letter topic
 * with their original text and a reason from the contract's taxonomy.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type RawServerDefault } from 'fastify';
import type { Config } from '../../common/config';
import { eventSchemaV1, validateEvent, type DeadLetter, type DlqReason } from '../../common/contract';
import { authPlugin, KeyRing } from '../../common/http/auth';
import { checkProductionSettings } from '../../common/http/production';
import { exposeRequestId, genReqId } from '../../common/http/request-id';
import { logger, type Logger } from '../../common/log';
import type { OutMessage } from './batcher';
import { collectorMetrics, type CollectorMetrics } from './metrics';
import { BodyParseError, parseJsonBody, parseJsonSeqBody, parseNdjsonBody, TooManyEventsError, type ParsedBody } from './parse';
import { KafkaSink, SinkUnavailableError, type EventSink } from './sink';

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

/** A dead letter's copy of a body this large is cut, so it stays far below Kafka's message size limit. */
const DLQ_RAW_MAX_CHARS = 256 * 1024;

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

/** The request body as the OpenAPI document shows it: one event of the contract, or an array of them. */
function eventsBodyDoc(maxEvents: number) {
  const { $id: _id, ...event } = eventSchemaV1;
  return { oneOf: [event, { type: 'array', minItems: 1, maxItems: maxEvents, items: event }] };
}

interface EventResult {
  index: number;
  event_id: string | null;
  status: 'accepted' | 'rejected';
  reason?: DlqReason;
  detail?: string;
}

function eventIdOf(parsed: unknown): string | null {
  if (parsed === null || typeof parsed !== 'object') return null;
  const id = (parsed as { event_id?: unknown }).event_id;
  return typeof id === 'string' ? id : null;
}

type BodyFormat = 'json' | 'ndjson' | 'json-seq';
function formatOf(contentType: string | undefined): BodyFormat {
  if (contentType === undefined) return 'json';
  if (/json-seq/i.test(contentType)) return 'json-seq';
  return /ndjson|jsonl/i.test(contentType) ? 'ndjson' : 'json';
}

function clip(raw: string, max: number): { raw: string; note: string } {
  return raw.length <= max ? { raw, note: '' } : { raw: raw.slice(0, max), note: ` (raw truncated to ${max} of ${raw.length} characters)` };
}

function deadLetter(reason: DlqReason, detail: string, raw: string, receivedAt: number, index?: number): OutMessage {
  const c = clip(raw, DLQ_RAW_MAX_CHARS);
  const letter: DeadLetter = { reason, detail: detail + c.note, received_at: receivedAt, raw: c.raw };
  if (index !== undefined) letter.index = index;
  return { key: reason, value: JSON.stringify(letter) };
}

export function buildCollector(cfg: Config, deps: CollectorDeps = {}): Collector {
  const c = cfg.collector;
  const log = deps.log ?? logger('collector');
  const now = deps.now ?? Date.now;
  const sink = deps.sink ?? new KafkaSink(cfg, log);
  const metrics = collectorMetrics({ defaultMetrics: deps.defaultMetrics });
  let inFlight = 0;
  let inFlightBytes = 0;
  const lateness = { latenessHorizonMs: cfg.batch.latenessHorizonMs };

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

  /**
   * 503 while Kafka is away. What the reply promises depends on how far the write got: refused
   * before anything was sent (the sink knew Kafka was down) means nothing was stored; a produce that
   * failed or timed out mid-flight may have reached Kafka. Retrying is safe either way, since
   * both layers de-duplicate by event_id. Kafka's own message goes to the log, not the caller.
   */
  const unavailable = (reply: FastifyReply, err: Error | null, events: number) => {
    metrics.unacknowledged.inc({ cause: 'kafka_unavailable' }, events);
    const refused = err === null || err instanceof SinkUnavailableError;
    if (err) reply.request.log.warn({ requestId: reply.request.id, err: err.message, events }, 'produce failed; answered 503');
    return reply
      .code(503)
      .header('retry-after', String(c.retryAfterSec))
      .send({
        error: 'kafka_unavailable',
        message: refused
          ? `Kafka is unavailable and nothing was stored; retry in ${c.retryAfterSec} s`
          : `Kafka did not acknowledge in time: the events may or may not be stored; retrying is safe (events are de-duplicated by event_id)`,
        retry_after_s: c.retryAfterSec,
        request_id: reply.request.id,
      });
  };

  const keys = new KeyRing([{ keys: c.apiKeys, scopes: ['ingest'] }]);
  app.register(authPlugin, {
    ring: keys,
    bearer: true,
    challenge: true,
    perKeyPerMin: c.rateLimitPerMin,
    anonymousPerMin: c.anonymousRateLimitPerMin,
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
      async (req, reply) => {
        const body = typeof req.body === 'string' ? req.body : '';
        if (sink.state !== 'up') return unavailable(reply, null, 0);
        // The whole request is inside the bound, malformed bodies included: parsing and dead-lettering cost too.
        const bytes = Buffer.byteLength(body);
        if (inFlightBytes + bytes > c.maxInFlightBytes) return overloaded(reply, 0);
        inFlightBytes += bytes;
        try {
          return await handle(body, req.headers['content-type'], reply);
        } finally {
          inFlightBytes -= bytes;
        }
      },
    );
  });

  const overloaded = (reply: FastifyReply, events: number) => {
    metrics.unacknowledged.inc({ cause: 'overload' }, events);
    return reply.code(429).header('retry-after', '1').send({
      error: 'overloaded',
      message: `the collector is busy (${inFlight} events / ${inFlightBytes} bytes in progress, limits ${c.maxInFlightEvents} / ${c.maxInFlightBytes}); nothing was stored, retry shortly`,
      limit: c.maxInFlightEvents,
    });
  };

  async function handle(body: string, contentType: string | undefined, reply: FastifyReply) {
    let parsed: ParsedBody;
    try {
      const format = formatOf(contentType);
      parsed =
        format === 'ndjson' ? parseNdjsonBody(body, c.maxBatchEvents) : format === 'json-seq' ? parseJsonSeqBody(body, c.maxBatchEvents) : parseJsonBody(body, c.maxBatchEvents);
    } catch (err) {
      if (err instanceof TooManyEventsError) {
        return reply.code(413).send({
          error: 'batch_too_large',
          message: `batch of ${err.count} events exceeds the limit of ${c.maxBatchEvents} events per request (COLLECTOR_MAX_BATCH_EVENTS); split it`,
          limit: c.maxBatchEvents,
        });
      }
      if (err instanceof BodyParseError) {
        if (body.trim() !== '') {
          try {
            await sink.write([], [deadLetter('malformed_json', err.message, body, now())]);
          } catch (e) {
            return unavailable(reply, e as Error, 0);
          }
          metrics.rejected.inc({ reason: 'malformed_json' });
        }
        return reply.code(400).send({ error: 'malformed_json', message: err.message, line: err.line, column: err.column, position: err.position });
      }
      throw err;
    }

    const n = parsed.items.length;
    if (inFlight + n > c.maxInFlightEvents) return overloaded(reply, n);
    inFlight += n;
    metrics.inFlight.set(inFlight);
    try {
      const receivedAt = now();
      const results: EventResult[] = new Array(n);
      const raw: OutMessage[] = [];
      const dlq: OutMessage[] = [];
      const reasons: DlqReason[] = [];
      const reject = (i: number, eventId: string | null, reason: DlqReason, detail: string, text: string) => {
        results[i] = { index: i, event_id: eventId, status: 'rejected', reason, detail };
        dlq.push(deadLetter(reason, detail, text, receivedAt, i));
        reasons.push(reason);
      };
      for (let i = 0; i < n; i++) {
        const item = parsed.items[i];
        if (item.parseError !== undefined) {
          reject(i, null, 'malformed_json', item.parseError, parsed.rawOf(i));
          continue;
        }
        const eventId = eventIdOf(item.parsed);
        const v = validateEvent(item.parsed, receivedAt, lateness);
        if (!v.ok) {
          reject(i, eventId, v.reason, v.detail, parsed.rawOf(i));
          continue;
        }
        const value = JSON.stringify(v.record);
        if (value.length > c.maxEventBytes) {
          reject(i, eventId, 'size_violation', `event record is ${value.length} bytes, over the limit of ${c.maxEventBytes} (COLLECTOR_MAX_EVENT_BYTES)`, parsed.rawOf(i));
          continue;
        }
        raw.push({ key: v.record.user_id, value });
        results[i] = { index: i, event_id: eventId, status: 'accepted' };
      }
      try {
        await sink.write(raw, dlq);
      } catch (err) {
        return unavailable(reply, err as Error, n);
      }
      metrics.accepted.inc(raw.length);
      for (const r of reasons) metrics.rejected.inc({ reason: r });
      return { accepted: raw.length, rejected: dlq.length, results };
    } finally {
      inFlight -= n;
      metrics.inFlight.set(inFlight);
    }
  }

  app.get('/health', { config: { access: 'none' }, schema: { summary: 'Whether Kafka takes writes', response: { 200: healthSchema, 503: healthSchema } } }, async (_req, reply) => {
    const state = await sink.check(5000);
    return reply
      .code(state === 'up' ? 200 : 503)
      .send({ status: state === 'up' ? 'ok' : 'unavailable', kafka: state, in_flight_events: inFlight, in_flight_bytes: inFlightBytes });
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
