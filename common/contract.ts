/**
 * The event contract of docs/metrics.md, in one place: the JSON Schema of
 * each schema_version, validation, the derived dimensions, the typed
 * dead-letter reasons, and the one decoder of the records on events.raw. The
 * collector, both layers and the tests import this; nobody re-declares a
 * field list.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { dayId } from './lake';

export const EVENT_TYPES = [
  'page_view',
  'click',
  'search',
  'video_play',
  'video_pause',
  'video_resume',
  'video_seek',
  'video_stop',
  'video_complete',
  'rebuffer',
  'app_install',
  'notification_view',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Event types that count as navigation before a play (path analysis). */
export const NAVIGATION_TYPES: readonly EventType[] = ['page_view', 'click', 'search'];

export const MIN_TIMESTAMP_MS = Date.UTC(2000, 0, 1);
export const MAX_FUTURE_SKEW_MS = 5 * 60 * 1000;
/** Default lateness horizon (config: batch.latenessHorizonMs): older events are dead-lettered as too_late. */
export const DEFAULT_LATENESS_HORIZON_MS = 7 * 24 * 3600 * 1000;
export const SESSION_GAP_MS = 1_800_000;
export const BINGE_WINDOW_MS = 14_400_000;
export const UNKNOWN = 'unknown';
export const ALL = 'ALL';

const optionalNumber = { type: 'number' } as const;

/**
 * The longest value each string field may have (characters). Each becomes a
 * dimension, a Redis field or a Parquet column value somewhere, so none is
 * unbounded; a longer value dead-letters the event as schema_violation. Unknown
 * fields are bounded only by the whole record's size (COLLECTOR_MAX_EVENT_BYTES).
 */
export const MAX_LENGTH = {
  event_id: 128,
  user_id: 128,
  session_id: 128,
  content_id: 128,
  device_type: 64,
  video_quality: 32,
  page: 512,
  target: 256,
  location: 64,
  user_agent: 512,
  ip_address: 64,
  app_version: 64,
  app_id: 64,
  device_os: 64,
  device_model: 128,
} as const;
const str = (field: keyof typeof MAX_LENGTH) => ({ type: 'string', maxLength: MAX_LENGTH[field] }) as const;

const contextSchema = {
  type: ['object', 'null'],
  properties: {
    location: str('location'),
    user_agent: str('user_agent'),
    ip_address: str('ip_address'),
    app_version: str('app_version'),
  },
} as const;

/**
 * JSON Schema of schema_version 1 (SchemaVer 1-0-0, published in schemas/event/1-0-0.json and
 * immutable from then on: `npm run schemas -- check`). Unknown extra fields are allowed
 * everywhere (additive evolution).
 */
export const eventSchemaV1 = {
  $id: 'clickstream/event/v1',
  type: 'object',
  required: ['event_id', 'event_type', 'user_id', 'timestamp'],
  properties: {
    event_id: { type: 'string', minLength: 1, maxLength: MAX_LENGTH.event_id },
    event_type: { type: 'string', enum: EVENT_TYPES },
    user_id: { type: 'string', minLength: 1, maxLength: MAX_LENGTH.user_id },
    session_id: { type: ['string', 'null'], maxLength: MAX_LENGTH.session_id },
    timestamp: { type: 'integer' },
    sent_at: { type: 'integer' },
    schema_version: { type: 'integer', const: 1 },
    properties: {
      type: ['object', 'null'],
      properties: {
        content_id: str('content_id'),
        device_type: str('device_type'),
        video_quality: str('video_quality'),
        playback_position: optionalNumber,
        duration_ms: optionalNumber,
        page: str('page'),
        target: str('target'),
      },
    },
    context: contextSchema,
  },
} as const;

const { device_type: _flatDeviceType, ...v1PropertiesWithoutDeviceType } = eventSchemaV1.properties.properties.properties;

/**
 * JSON Schema of schema_version 2 (SchemaVer 2-0-0): a new MODEL, since a v1 reader cannot read
 * it — the device is an object `properties.device {type, os, model}` instead of the flat
 * `properties.device_type`, and `app_id` (the app that sent the event) is required.
 * `upcastToV1` maps it onto the v1 fields the dimensions are derived from, so a v1 and a v2
 * event of the same facts give the same record dimensions.
 */
export const eventSchemaV2 = {
  $id: 'clickstream/event/v2',
  type: 'object',
  required: ['event_id', 'event_type', 'user_id', 'timestamp', 'schema_version', 'app_id'],
  properties: {
    event_id: eventSchemaV1.properties.event_id,
    event_type: eventSchemaV1.properties.event_type,
    user_id: eventSchemaV1.properties.user_id,
    session_id: eventSchemaV1.properties.session_id,
    timestamp: eventSchemaV1.properties.timestamp,
    sent_at: eventSchemaV1.properties.sent_at,
    schema_version: { type: 'integer', const: 2 },
    app_id: { type: 'string', minLength: 1, maxLength: MAX_LENGTH.app_id },
    properties: {
      type: ['object', 'null'],
      properties: {
        // Version 1's properties with the flat device_type replaced by the device object.
        ...v1PropertiesWithoutDeviceType,
        device: {
          type: ['object', 'null'],
          properties: { type: str('device_type'), os: str('device_os'), model: str('device_model') },
        },
      },
    },
    context: contextSchema,
  },
} as const;

/** The properties and context a version's event carries, as the v1 model names them (what the dimensions are derived from). */
export interface V1View {
  properties: Record<string, unknown> | null;
  context: Record<string, unknown> | null;
}

/**
 * One published MODEL of the event: its JSON Schema, its SchemaVer, the top-level fields it
 * knows (anything else goes to `extra`), and the upcaster to the v1 view.
 */
export interface SchemaVersionDef {
  version: number;
  schemaVer: string;
  schema: { $id: string; properties: Record<string, unknown> };
  knownTopLevel: ReadonlySet<string>;
  upcastToV1(ev: Record<string, unknown>): V1View;
}

const asObject = (v: unknown): Record<string, unknown> | null => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null);

/** Every event schema the collector accepts, by schema_version. */
export const SCHEMA_VERSIONS: Readonly<Record<number, SchemaVersionDef>> = {
  1: {
    version: 1,
    schemaVer: '1-0-0',
    schema: eventSchemaV1,
    knownTopLevel: new Set(Object.keys(eventSchemaV1.properties)),
    upcastToV1: (ev) => ({ properties: asObject(ev.properties), context: asObject(ev.context) }),
  },
  2: {
    version: 2,
    schemaVer: '2-0-0',
    schema: eventSchemaV2,
    knownTopLevel: new Set(Object.keys(eventSchemaV2.properties)),
    upcastToV1: (ev) => {
      const props = asObject(ev.properties);
      const device = asObject(props?.device);
      // Only device.type has a v1 field; os and model are new (raw lake columns device_os, device_model).
      return { properties: props && { ...props, device_type: device?.type }, context: asObject(ev.context) };
    },
  },
};

/** Top-level fields of schema_version 1 (the default version); see SCHEMA_VERSIONS for the others. */
export const KNOWN_TOP_LEVEL_FIELDS = SCHEMA_VERSIONS[1].knownTopLevel;

export const SUPPORTED_SCHEMA_VERSIONS = Object.keys(SCHEMA_VERSIONS).map(Number);

/**
 * The fixed taxonomy of dead-letter reasons (after Snowplow's failed-event types).
 * Each is machine-readable; `detail` carries the human part.
 */
export const DLQ_REASONS = [
  'malformed_json',
  'not_an_object',
  'schema_violation',
  'unknown_schema_version',
  'timestamp_out_of_range',
  'size_violation',
  /** Older than the lateness horizon (after clock-skew correction); replayable into an explicit backfill. */
  'too_late',
] as const;
export type DlqReason = (typeof DLQ_REASONS)[number];

/** The record the collector writes to `events.raw`: the event as sent plus derived dimensions. */
export interface EventRecord {
  event_id: string;
  event_type: EventType;
  user_id: string;
  session_id: string | null;
  /**
   * Event time, epoch ms: the event's `timestamp`, corrected for the device's clock skew
   * when the client sent `sent_at` (ts = timestamp + (received_at − sent_at)). Every
   * bucket, dedupe and horizon rule uses this.
   */
  ts: number;
  /** The event's `timestamp` as the device stamped it; present only when `sent_at` corrected it (else it is ts). */
  device_ts?: number;
  /** The client's send time by its own clock (`sent_at`); present only when the client sent it. */
  sent_at?: number;
  schema_version: number;
  /** The app that sent the event (schema_version 2 on); absent for version 1. */
  app_id?: string;
  device_type: string;
  country: string;
  app_version: string;
  content_id: string | null;
  /** Collector time (ms) when the event was accepted. */
  received_at: number;
  properties: Record<string, unknown> | null;
  context: Record<string, unknown> | null;
  /** Unknown top-level fields, kept verbatim (schema evolution). */
  extra: Record<string, unknown> | null;
}

/** The record the collector writes to `events.dlq`. */
export interface DeadLetter {
  reason: DlqReason;
  detail: string;
  received_at: number;
  /** The original bytes of the rejected event (UTF-8 text as received). */
  raw: string;
  /** Where the event stood in its request (0-based), when the request was a batch. */
  index?: number;
}

export type ValidationResult =
  | { ok: true; record: EventRecord }
  | { ok: false; reason: DlqReason; detail: string };

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
const validators: Record<number, ValidateFunction> = Object.fromEntries(Object.values(SCHEMA_VERSIONS).map((v) => [v.version, ajv.compile(v.schema)]));

function describe(error: ErrorObject | undefined): string {
  if (!error) return 'invalid event';
  const where = error.instancePath === '' ? 'event' : error.instancePath.slice(1).replaceAll('/', '.');
  if (error.keyword === 'enum') return `${where} must be one of ${(error.params as { allowedValues: string[] }).allowedValues.join(', ')}`;
  if (error.keyword === 'required') return `${(error.params as { missingProperty: string }).missingProperty} is required`;
  return `${where} ${error.message ?? 'is invalid'}`;
}

function nonEmpty(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

/** country = the part of location before the first '-', upper-cased, if it is 2 letters; else unknown. */
export function deriveCountry(location: unknown): string {
  if (typeof location !== 'string') return UNKNOWN;
  const dash = location.indexOf('-');
  const head = dash === -1 ? location : location.slice(0, dash);
  return /^[A-Za-z]{2}$/.test(head) ? head.toUpperCase() : UNKNOWN;
}

/** The lateness policy validateEvent applies (defaults: DEFAULT_LATENESS_HORIZON_MS). */
export interface LatenessPolicy {
  /** Events older than now − this (after skew correction) are too_late; Infinity accepts any age (an operator's backfill). */
  latenessHorizonMs?: number;
}

/**
 * Validate one parsed event and derive its dimensions. `now` is the collector's
 * clock, used as received_at, to correct the device's clock skew when the event
 * carries `sent_at` (ts = timestamp + (now − sent_at), as Snowplow and PostHog
 * do), and for the range rules on the corrected time: not more than 5 minutes in
 * the future, not before 2000-01-01, not older than the lateness horizon.
 */
export function validateEvent(input: unknown, now: number, policy: LatenessPolicy = {}): ValidationResult {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return { ok: false, reason: 'not_an_object', detail: `an event must be a JSON object, got ${input === null ? 'null' : Array.isArray(input) ? 'array' : typeof input}` };
  }
  const ev = input as Record<string, unknown>;
  const version = ev.schema_version ?? 1;
  if (!Number.isInteger(version) || !(SUPPORTED_SCHEMA_VERSIONS as readonly number[]).includes(version as number)) {
    return {
      ok: false,
      reason: 'unknown_schema_version',
      detail: `schema_version ${JSON.stringify(version)} is not supported (supported: ${SUPPORTED_SCHEMA_VERSIONS.join(', ')})`,
    };
  }
  const validate = validators[version as number];
  if (!validate(ev)) {
    return { ok: false, reason: 'schema_violation', detail: describe(validate.errors?.[0]) };
  }
  const deviceTs = ev.timestamp as number;
  const sentAt = (ev.sent_at as number | undefined) ?? null;
  // The device's clock is off by (sent_at − now) when it sent the event; its timestamp is off by the same.
  const ts = sentAt === null ? deviceTs : deviceTs + (now - sentAt);
  const corrected = sentAt === null ? '' : ` (device timestamp ${deviceTs} corrected by the clock skew now − sent_at = ${now - sentAt} ms)`;
  if (ts < MIN_TIMESTAMP_MS || ts > now + MAX_FUTURE_SKEW_MS) {
    return {
      ok: false,
      reason: 'timestamp_out_of_range',
      detail: `timestamp ${ts}${corrected} must be between ${MIN_TIMESTAMP_MS} (2000-01-01) and 5 minutes after the collector's clock (${now + MAX_FUTURE_SKEW_MS})`,
    };
  }
  const horizon = policy.latenessHorizonMs ?? DEFAULT_LATENESS_HORIZON_MS;
  if (ts < now - horizon) {
    return {
      ok: false,
      reason: 'too_late',
      detail: `timestamp ${ts}${corrected} is older than the lateness horizon (${horizon} ms before the collector's clock ${now}); an operator can replay it into a backfill`,
    };
  }
  const properties = (ev.properties ?? null) as Record<string, unknown> | null;
  const context = (ev.context ?? null) as Record<string, unknown> | null;
  const def = SCHEMA_VERSIONS[version as number];
  // Dimensions are derived from the v1 view, so every version derives them one way.
  const v1 = def.upcastToV1(ev);
  let extra: Record<string, unknown> | null = null;
  for (const key of Object.keys(ev)) {
    if (!def.knownTopLevel.has(key)) (extra ??= {})[key] = ev[key];
  }
  return {
    ok: true,
    record: {
      event_id: ev.event_id as string,
      event_type: ev.event_type as EventType,
      user_id: ev.user_id as string,
      session_id: (ev.session_id as string | null | undefined) ?? null,
      ts,
      // Only when a correction was made: otherwise the device time is ts itself.
      ...(sentAt === null ? {} : { device_ts: deviceTs, sent_at: sentAt }),
      schema_version: version as number,
      ...(def.knownTopLevel.has('app_id') ? { app_id: ev.app_id as string } : {}),
      device_type: nonEmpty(v1.properties?.device_type) ?? UNKNOWN,
      country: deriveCountry(v1.context?.location),
      app_version: nonEmpty(v1.context?.app_version) ?? UNKNOWN,
      content_id: nonEmpty(v1.properties?.content_id),
      received_at: now,
      properties,
      context,
      extra,
    },
  };
}

/** The latest time a Date can hold (ms): a later ts would make its hour or day key throw and block a partition. */
export const MAX_DATE_MS = 8.64e15;

/** An epoch-ms time from 1970 that a Date can hold. */
export function isEpochMs(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= MAX_DATE_MS;
}

/**
 * JSON Schema of a record of `events.raw` as its consumers need it (decodeRecord): looser than
 * what the collector writes, since the topic also holds records of older versions, of other
 * producers and of `dlq replay --accept-too-late`. Required: the identity of the event and an
 * event time a Date can hold; properties, context and extra, if present, objects. Anything
 * else takes the contract's default (decodeRecord). The collector's range and lateness rules
 * are not applied again: they judged the event against the clock when it was received.
 */
export const eventRecordSchema = {
  $id: 'clickstream/record',
  type: 'object',
  required: ['event_id', 'event_type', 'user_id', 'ts'],
  properties: {
    event_id: { type: 'string', minLength: 1 },
    event_type: { type: 'string', enum: EVENT_TYPES },
    user_id: { type: 'string', minLength: 1 },
    ts: { type: 'integer', minimum: 0, maximum: MAX_DATE_MS },
    properties: { type: ['object', 'null'] },
    context: { type: ['object', 'null'] },
    extra: { type: ['object', 'null'] },
  },
} as const;
const validateRecord: ValidateFunction = ajv.compile(eventRecordSchema);

/**
 * Why a record of `events.raw` is not an EventRecord. A class, so that a consumer tells it from
 * a record with `instanceof`: a foreign record may carry any field, `reason` included.
 */
export class RejectedRecord {
  constructor(
    readonly reason: DlqReason,
    readonly detail: string,
  ) {}
}

/**
 * Decode one record of `events.raw`: the EventRecord, or why it is none. The one rule of both
 * consumers; each keeps its own policy for a rejected record (the speed layer counts it as
 * unparseable, the lake writer archives it as a dead letter).
 *
 * What eventRecordSchema leaves open takes the contract's default, so both layers count the
 * same records the same way: a missing or empty device_type, country or app_version is
 * `unknown` (as the collector derives it), a session_id or content_id that is not a string
 * null, schema_version 1, received_at 0 (not known), a device_ts or sent_at that is not a
 * time absent.
 *
 * The hot path of the speed layer (~50k records/s): one JSON.parse, and the parsed object
 * itself is returned, completed in place, so a valid record costs no other allocation; a
 * collector's record needs no default, so none is written.
 */
export function decodeRecord(value: Buffer | string | null): EventRecord | RejectedRecord {
  if (value === null) return new RejectedRecord('malformed_json', 'no value (a tombstone)');
  let v: unknown;
  try {
    v = JSON.parse(typeof value === 'string' ? value : value.toString('utf8'));
  } catch (err) {
    return new RejectedRecord('malformed_json', (err as Error).message);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return new RejectedRecord('not_an_object', 'record is not a JSON object');
  if (!validateRecord(v)) return new RejectedRecord('schema_violation', describe(validateRecord.errors?.[0]));
  const r = v as Record<string, unknown>;
  if (r.session_id !== null && typeof r.session_id !== 'string') r.session_id = null;
  if (r.content_id !== null && typeof r.content_id !== 'string') r.content_id = null;
  if (nonEmpty(r.device_type) === null) r.device_type = UNKNOWN;
  if (nonEmpty(r.country) === null) r.country = UNKNOWN;
  if (nonEmpty(r.app_version) === null) r.app_version = UNKNOWN;
  if (!Number.isInteger(r.schema_version)) r.schema_version = 1;
  if (!Number.isSafeInteger(r.received_at)) r.received_at = 0;
  if (r.properties === undefined) r.properties = null;
  if (r.context === undefined) r.context = null;
  if (r.extra === undefined) r.extra = null;
  // Present only when the collector corrected ts for the device's clock skew (docs/metrics.md).
  if (r.device_ts !== undefined && !isEpochMs(r.device_ts)) r.device_ts = undefined;
  if (r.sent_at !== undefined && !isEpochMs(r.sent_at)) r.sent_at = undefined;
  if (r.app_id !== undefined && nonEmpty(r.app_id) === null) r.app_id = undefined;
  return r as unknown as EventRecord;
}

/** Floor of an epoch-ms timestamp to a bucket of the given unit. */
export const BUCKET_MS = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
export type Granularity = keyof typeof BUCKET_MS;
export function bucketStart(ts: number, unit: Granularity): number {
  const size = BUCKET_MS[unit];
  return Math.floor(ts / size) * size;
}

/** The starts of the buckets that overlap [from, to): the first may begin before `from`. */
export function bucketsIn(from: number, to: number, unit: Granularity): number[] {
  const size = BUCKET_MS[unit];
  const first = bucketStart(from, unit);
  return Array.from({ length: Math.max(0, Math.ceil((to - first) / size)) }, (_, i) => first + i * size);
}

/** `YYYY-MM-DD` of an epoch-ms timestamp (UTC). */
export function dayOf(ts: number): string {
  return dayId(ts);
}

/** Two-digit UTC hour of an epoch-ms timestamp. */
export function hourOf(ts: number): string {
  return new Date(ts).toISOString().slice(11, 13);
}
