/**
 * The path of one POST /v1/events, as named steps (PostHog's event pipeline):
 *
 *   admit bytes → parse → admit events → validate → pseudonymise → size → produce → reply
 *
 * A CPU profile, a log line and a reader all name the same step. Each event is
 * answered on its own: accepted once Kafka acknowledged it (acks=all), or
 * rejected and dead-lettered with its original text (its IP address
 * pseudonymised there too) and a reason from the contract's taxonomy. Only what
 * concerns the whole request (no Kafka, a body that is not JSON, too many
 * events, too much in flight) is answered as a whole.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../../common/config';
import { validateEvent, type DeadLetter, type DlqReason, type EventRecord } from '../../common/contract';
import type { OutMessage } from './batcher';
import type { CollectorMetrics } from './metrics';
import { pseudonymiser, type Pseudonymiser } from './pseudonymise';
import { BodyParseError, parseJsonBody, parseJsonSeqBody, parseNdjsonBody, TooManyEventsError, type ParsedBody } from './parse';
import { SinkUnavailableError, type EventSink } from './sink';

/** A dead letter's copy of a body this large is cut, so it stays far below Kafka's message size limit. */
const DLQ_RAW_MAX_CHARS = 256 * 1024;

export interface EventResult {
  index: number;
  event_id: string | null;
  status: 'accepted' | 'rejected';
  reason?: DlqReason;
  detail?: string;
}

export interface IngestDeps {
  cfg: Config;
  sink: EventSink;
  metrics: CollectorMetrics;
  /** The collector's clock (received_at, the future-timestamp rule). */
  now: () => number;
}

/** What one request carries from step to step. */
interface Batch {
  parsed: ParsedBody;
  receivedAt: number;
  results: EventResult[];
  /** Per index: the validated record (and the caller's event_id), until `size` serialises it. */
  valid: Array<{ record: EventRecord; eventId: string | null } | undefined>;
  /** Per index: the serialised record to produce, once it passed every step. */
  accepted: Array<OutMessage | undefined>;
  /** Per index: the dead letter of a rejected event. */
  rejected: Array<OutMessage | undefined>;
  ips: Pseudonymiser;
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

export function deadLetter(ips: Pseudonymiser, reason: DlqReason, detail: string, raw: string, receivedAt: number, index?: number): OutMessage {
  const c = clip(ips.raw(raw, receivedAt), DLQ_RAW_MAX_CHARS);
  const letter: DeadLetter = { reason, detail: detail + c.note, received_at: receivedAt, raw: c.raw };
  if (index !== undefined) letter.index = index;
  return { key: reason, value: JSON.stringify(letter) };
}

function reject(batch: Batch, i: number, eventId: string | null, reason: DlqReason, detail: string): void {
  batch.results[i] = { index: i, event_id: eventId, status: 'rejected', reason, detail };
  batch.rejected[i] = deadLetter(batch.ips, reason, detail, batch.parsed.rawOf(i), batch.receivedAt, i);
}

/** Present entries in index order: the order events had in the request. */
const inOrder = (xs: Array<OutMessage | undefined>): OutMessage[] => xs.filter((x): x is OutMessage => x !== undefined);

/** The body as events, in its format (throws BodyParseError or TooManyEventsError for the request as a whole). */
function parseStep(deps: IngestDeps, body: string, contentType: string | undefined): ParsedBody {
  const max = deps.cfg.collector.maxBatchEvents;
  const format = formatOf(contentType);
  return format === 'ndjson' ? parseNdjsonBody(body, max) : format === 'json-seq' ? parseJsonSeqBody(body, max) : parseJsonBody(body, max);
}

/** Each event against the contract; a line that did not parse (NDJSON) is rejected here, in its place. */
function validateStep(deps: IngestDeps, batch: Batch): void {
  const lateness = { latenessHorizonMs: deps.cfg.batch.latenessHorizonMs };
  batch.parsed.items.forEach((item, i) => {
    if (item.parseError !== undefined) return reject(batch, i, null, 'malformed_json', item.parseError);
    const eventId = eventIdOf(item.parsed);
    const v = validateEvent(item.parsed, batch.receivedAt, lateness);
    if (!v.ok) return reject(batch, i, eventId, v.reason, v.detail);
    batch.valid[i] = { record: v.record, eventId };
  });
}

/** No full IP address goes further than this (ingestion/collector/pseudonymise.ts). */
function pseudonymiseStep(batch: Batch): void {
  batch.valid.forEach((valid, i) => {
    if (valid !== undefined) valid.record = batch.ips.record(valid.record);
  });
}

/** Each valid event's record, serialised, within COLLECTOR_MAX_EVENT_BYTES. */
function sizeStep(deps: IngestDeps, batch: Batch): void {
  const max = deps.cfg.collector.maxEventBytes;
  batch.valid.forEach((valid, i) => {
    if (valid === undefined) return;
    const { record, eventId } = valid;
    const value = JSON.stringify(record);
    if (value.length > max) return reject(batch, i, eventId, 'size_violation', `event record is ${value.length} bytes, over the limit of ${max} (COLLECTOR_MAX_EVENT_BYTES)`);
    batch.accepted[i] = { key: record.user_id, value };
    batch.results[i] = { index: i, event_id: eventId, status: 'accepted' };
  });
}

/** Accepted records to the raw topic and dead letters to the DLQ, in one write Kafka acknowledges (or not) as a whole. */
async function produceStep(deps: IngestDeps, batch: Batch): Promise<void> {
  await deps.sink.write(inOrder(batch.accepted), inOrder(batch.rejected));
}

/** What each event became, counted. */
function replyStep(deps: IngestDeps, batch: Batch): { accepted: number; rejected: number; results: EventResult[] } {
  const accepted = inOrder(batch.accepted).length;
  const rejected = batch.results.filter((r) => r.status === 'rejected');
  deps.metrics.accepted.inc(accepted);
  for (const r of rejected) deps.metrics.rejected.inc({ reason: r.reason! });
  return { accepted, rejected: rejected.length, results: batch.results };
}

/** The POST /v1/events handler and the in-flight bounds it keeps (GET /health shows them). */
export class Ingest {
  inFlightEvents = 0;
  inFlightBytes = 0;

  constructor(private readonly deps: IngestDeps) {}

  /** The route handler: the whole request is inside the bytes bound, malformed bodies included, since parsing and dead-lettering cost too. */
  readonly handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const body = typeof req.body === 'string' ? req.body : '';
    if (this.deps.sink.state !== 'up') return this.unavailable(reply, null, 0);
    const bytes = Buffer.byteLength(body);
    if (this.inFlightBytes + bytes > this.deps.cfg.collector.maxInFlightBytes) return this.overloaded(reply, 0);
    this.inFlightBytes += bytes;
    try {
      return await this.ingest(body, req.headers['content-type'], reply);
    } finally {
      this.inFlightBytes -= bytes;
    }
  };

  private async ingest(body: string, contentType: string | undefined, reply: FastifyReply) {
    const { cfg, metrics, sink, now } = this.deps;
    const c = cfg.collector;
    let parsed: ParsedBody;
    try {
      parsed = parseStep(this.deps, body, contentType);
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
            await sink.write([], [deadLetter(pseudonymiser(cfg), 'malformed_json', err.message, body, now())]);
          } catch (e) {
            return this.unavailable(reply, e as Error, 0);
          }
          metrics.rejected.inc({ reason: 'malformed_json' });
        }
        return reply.code(400).send({ error: 'malformed_json', message: err.message, line: err.line, column: err.column, position: err.position });
      }
      throw err;
    }

    const n = parsed.items.length;
    if (this.inFlightEvents + n > c.maxInFlightEvents) return this.overloaded(reply, n);
    this.inFlightEvents += n;
    metrics.inFlight.set(this.inFlightEvents);
    try {
      const batch: Batch = { parsed, receivedAt: now(), results: new Array(n), valid: new Array(n), accepted: new Array(n), rejected: new Array(n), ips: pseudonymiser(cfg) };
      validateStep(this.deps, batch);
      pseudonymiseStep(batch);
      sizeStep(this.deps, batch);
      try {
        await produceStep(this.deps, batch);
      } catch (err) {
        return this.unavailable(reply, err as Error, n);
      }
      return replyStep(this.deps, batch);
    } finally {
      this.inFlightEvents -= n;
      metrics.inFlight.set(this.inFlightEvents);
    }
  }

  /**
   * 503 while Kafka is away. What the reply promises depends on how far the write got: refused
   * before anything was sent (the sink knew Kafka was down) means nothing was stored; a produce that
   * failed or timed out mid-flight may have reached Kafka. Retrying is safe either way, since
   * both layers de-duplicate by event_id. Kafka's own message goes to the log, not the caller.
   */
  private unavailable(reply: FastifyReply, err: Error | null, events: number) {
    const c = this.deps.cfg.collector;
    this.deps.metrics.unacknowledged.inc({ cause: 'kafka_unavailable' }, events);
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
  }

  private overloaded(reply: FastifyReply, events: number) {
    const c = this.deps.cfg.collector;
    this.deps.metrics.unacknowledged.inc({ cause: 'overload' }, events);
    return reply.code(429).header('retry-after', '1').send({
      error: 'overloaded',
      message: `the collector is busy (${this.inFlightEvents} events / ${this.inFlightBytes} bytes in progress, limits ${c.maxInFlightEvents} / ${c.maxInFlightBytes}); nothing was stored, retry shortly`,
      limit: c.maxInFlightEvents,
    });
  }
}
