/**
 * The lake contract: object layout, the raw Parquet schema, and the manifest
 * through which batch runs publish and the serving layer finds the watermark.
 * The lake writer, the batch layer, the serving layer and the tests all use
 * these functions; nobody spells a lake path by hand.
 *
 * Layout (one bucket, Hive-style partitions, zstd Parquet):
 *   raw/events/dt=YYYY-MM-DD/hour=HH/p<partition>-<firstOffset>-<lastOffset>.parquet   master dataset, immutable
 *   raw/dlq/dt=YYYY-MM-DD/p<partition>-<firstOffset>-<lastOffset>.parquet              dead letters
 *   processed/<table>/dt=YYYY-MM-DD/[hour=HH/]part-<runId>.parquet                       cleaned, de-duplicated
 *   aggregated/<table>/dt=YYYY-MM-DD/[hour=HH/]part-<runId>.parquet                      batch views
 *                     (one object per run: only the one the period's manifest names is current)
 *   _staging/<runId>/…                                                                   a run's outputs before publish
 *   _manifests/hourly/dt=YYYY-MM-DD/hour=HH.json                                         what an hourly run published
 *   _manifests/daily/dt=YYYY-MM-DD.json                                                  what a daily run published
 *   _manifests/dirty/hourly/dt=YYYY-MM-DD/hour=HH.json                                   an hour that must be recomputed
 *   _manifests/dirty/daily/dt=YYYY-MM-DD.json                                            a day that must be recomputed
 *                                                       (a cleared marker stays as a tombstone: see DirtyMarker)
 *   _manifests/watermark.json                                                            the batch watermark (computed)
 *   _manifests/pin.json                                                                  an operator's pin (its own object)
 *   _manifests/audit/pin/<iso-time>-<requestId>.json                                     who set which pin, when
 *   _manifests/retention/raw/dt=YYYY-MM-DD.json                                          raw of this day was removed
 *   _manifests/retention/processed/dt=YYYY-MM-DD.json                                    processed/events+sessions of this day were removed
 *   _manifests/retention/aggregated/dt=YYYY-MM-DD.json                                   the batch views of this day were removed
 */

export type Zone = 'processed' | 'aggregated';
export type PeriodKind = 'hourly' | 'daily';

/** An hour is `YYYY-MM-DDTHH` (UTC); a day is `YYYY-MM-DD`. */
export const HOUR_RE = /^\d{4}-\d{2}-\d{2}T\d{2}$/;
export const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;

/**
 * The id of the bucket a timestamp falls in, remembering the last bucket's: the consumers ask per
 * event, events come mostly in time order, and a Date plus its ISO string per event was 4 % of the
 * lake writer's CPU. An invalid timestamp still throws (NaN never equals the remembered bucket).
 */
function bucketIdOf(size: number, length: number): (ts: number) => string {
  let bucket = NaN;
  let id = '';
  return (ts) => {
    const b = Math.floor(ts / size);
    if (b !== bucket) {
      id = new Date(b * size).toISOString().slice(0, length);
      bucket = b;
    }
    return id;
  };
}

/** `YYYY-MM-DDTHH` (UTC) of an epoch-ms timestamp. */
export const hourId: (ts: number) => string = bucketIdOf(3_600_000, 13);
/** `YYYY-MM-DD` (UTC) of an epoch-ms timestamp. */
export const dayId: (ts: number) => string = bucketIdOf(86_400_000, 10);
export function hourStartMs(hour: string): number {
  if (!HOUR_RE.test(hour)) throw new RangeError(`not an hour (YYYY-MM-DDTHH): ${hour}`);
  return Date.parse(`${hour}:00:00Z`);
}
export function dayStartMs(day: string): number {
  if (!DAY_RE.test(day)) throw new RangeError(`not a day (YYYY-MM-DD): ${day}`);
  return Date.parse(`${day}T00:00:00Z`);
}

function splitHour(hour: string): { dt: string; hh: string } {
  hourStartMs(hour);
  return { dt: hour.slice(0, 10), hh: hour.slice(11, 13) };
}

export const lakePaths = {
  rawEventsPrefix: 'raw/events/',
  rawHourPrefix(hour: string): string {
    const { dt, hh } = splitHour(hour);
    return `raw/events/dt=${dt}/hour=${hh}/`;
  },
  rawDayPrefix(day: string): string {
    dayStartMs(day);
    return `raw/events/dt=${day}/`;
  },
  /** Derived from the Kafka offsets it holds, so a retry rewrites the same object. */
  rawObject(hour: string, partition: number, firstOffset: string, lastOffset: string): string {
    return `${lakePaths.rawHourPrefix(hour)}p${partition}-${firstOffset}-${lastOffset}.parquet`;
  },
  /**
   * `source` 'raw' is for records on events.raw the lake writer could not read
   * (a producer broke the contract): archived as dead letters, keyed apart so
   * their offsets never collide with events.dlq's.
   */
  dlqObject(day: string, partition: number, firstOffset: string, lastOffset: string, source: 'dlq' | 'raw' = 'dlq'): string {
    dayStartMs(day);
    return `raw/dlq/dt=${day}/${source === 'raw' ? 'raw-' : ''}p${partition}-${firstOffset}-${lastOffset}.parquet`;
  },
  rawDlqPrefix: 'raw/dlq/',
  /** Every object of a table, all periods and runs. */
  tableRoot(zone: Zone, table: string): string {
    return `${zone}/${table}/`;
  },
  /** The folder holding every run's object of a table for a period (garbage collection lists it). */
  tablePrefix(zone: Zone, table: string, period: string): string {
    if (HOUR_RE.test(period)) {
      const { dt, hh } = splitHour(period);
      return `${lakePaths.tableRoot(zone, table)}dt=${dt}/hour=${hh}/`;
    }
    dayStartMs(period);
    return `${lakePaths.tableRoot(zone, table)}dt=${period}/`;
  },
  /**
   * A run's object of a table for a period. Each run writes its own key and the
   * period's manifest names the current one, so a re-publish never overwrites what
   * a reader of the previous manifest is fetching, and a run that dies half-way
   * leaves the current run whole. The run id is a file name, not a `run=` folder:
   * every table keeps the depth (and Hive partition columns) it always had.
   */
  table(zone: Zone, table: string, period: string, runId: string): string {
    return `${lakePaths.tablePrefix(zone, table, period)}part-${runId.replace(/[^A-Za-z0-9._-]/g, '_')}.parquet`;
  },
  staging(runId: string, finalKey: string): string {
    return `_staging/${runId}/${finalKey}`;
  },
  /** Every manifest of a period kind (listing it lists the published periods). */
  manifestPrefix(kind: PeriodKind): string {
    return `_manifests/${kind}/`;
  },
  manifest(kind: PeriodKind, period: string): string {
    if (kind === 'hourly') {
      const { dt, hh } = splitHour(period);
      return `_manifests/hourly/dt=${dt}/hour=${hh}.json`;
    }
    dayStartMs(period);
    return `_manifests/daily/dt=${period}.json`;
  },
  dirtyPrefix(kind: PeriodKind): string {
    return `_manifests/dirty/${kind}/`;
  },
  dirtyMarker(kind: PeriodKind, period: string): string {
    if (kind === 'hourly') {
      const { dt, hh } = splitHour(period);
      return `_manifests/dirty/hourly/dt=${dt}/hour=${hh}.json`;
    }
    dayStartMs(period);
    return `_manifests/dirty/daily/dt=${period}.json`;
  },
  watermark: '_manifests/watermark.json',
  /**
   * The operator's pin lives apart from the computed watermark: every publish
   * rewrites watermark.json, and a pin folded into it could be overwritten by a
   * publish that read it just before the pin was written.
   */
  pin: '_manifests/pin.json',
  pinAuditPrefix: '_manifests/audit/pin/',
  /** One object per pin change, never overwritten: the time first so a listing reads as a log. */
  pinAudit(at: Date, requestId: string): string {
    const safe = requestId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 128) || 'none';
    return `${lakePaths.pinAuditPrefix}${at.toISOString()}-${safe}.json`;
  },
  /** Written before processed retention deletes a day's processed/events and processed/sessions. */
  processedRetention(day: string): string {
    dayStartMs(day);
    return `_manifests/retention/processed/dt=${day}.json`;
  },
  aggregatedRetentionPrefix: '_manifests/retention/aggregated/',
  /** Written before retention deletes a day's batch views: readers treat the day's periods as not published. */
  aggregatedRetention(day: string): string {
    dayStartMs(day);
    return `_manifests/retention/aggregated/dt=${day}.json`;
  },
  rawRetentionPrefix: '_manifests/retention/raw/',
  /** Written before retention deletes a raw day: from then on the day's periods must not be recomputed from what is left. */
  rawRetention(day: string): string {
    dayStartMs(day);
    return `_manifests/retention/raw/dt=${day}.json`;
  },
  /** Objects merged by compaction: named after the digest of the objects they replace, so a retry rewrites the same keys. */
  compactedObject(hour: string, digest: string, index: number): string {
    return `${lakePaths.rawHourPrefix(hour)}c-${digest}-${index}.parquet`;
  },
  /** What compaction merged in an hour: inputs, outputs, and whether the inputs were removed. */
  compactionManifest(hour: string): string {
    const { dt, hh } = splitHour(hour);
    return `_manifests/compaction/dt=${dt}/hour=${hh}.json`;
  },
} as const;

/** One output table of the batch layer: what publishes it, who reads it. */
export interface LakeTable {
  /** Its folder (`<zone>/<table>/`) and its key in `RunManifest.outputs`. */
  table: string;
  zone: Zone;
  /** The job that publishes it; its objects are per hour (`dt=…/hour=…/`) or per day. */
  period: PeriodKind;
  /** Loaded by the serving layer's batch store. */
  served: boolean;
  /**
   * Daily per-user tables: each user-hash shard computes its users' rows and publish
   * concatenates them in this order (the order makes the bytes independent of the shard count).
   * The others are computed once, by their SQL file, from what comes before them.
   */
  shard?: { orderBy: string };
  /** The SQL file (`batch-layer/sql/<sql>.sql`) when it is not named after the table. */
  sql?: string;
  /** Its view in `npm run lake`, when not the table's name. */
  view?: string;
  /**
   * Processed tables that only their own period's re-run (and the next day's, for the binge
   * window) reads: processed retention removes them once raw is gone. The others stay
   * (user_daily_activity is every later day's first_seen history).
   */
  expires?: true;
  description: string;
}

/**
 * The batch layer's output tables, the one list the jobs, the serving sync and the lake
 * CLI read. Processed before aggregated; within a period kind, in computing order (each
 * table's SQL may read the tables of its kind listed before it). Adding a metric's table
 * here publishes, serves and exposes it; its SQL file and definition come with it.
 */
export const LAKE_TABLES: readonly LakeTable[] = [
  { table: 'events', zone: 'processed', period: 'hourly', served: false, sql: 'events_across_hours', expires: true, description: 'valid events de-duplicated by event_id, per hour' },
  { table: 'sessions', zone: 'processed', period: 'daily', served: false, shard: { orderBy: 'user_id, session_idx' }, expires: true, description: 'sessions per METRICS.md (30-minute gap, split at midnight)' },
  { table: 'user_daily_activity', zone: 'processed', period: 'daily', served: true, shard: { orderBy: 'user_id' }, description: 'one row per user and active day' },
  { table: 'event_ids', zone: 'processed', period: 'hourly', served: false, expires: true, description: "each hour's de-duplication index: where an id's first copy was received, whether the hour counted it" },
  { table: 'hourly_events', zone: 'aggregated', period: 'hourly', served: true, description: 'event counts per hour x type x device x country x app version, with ALL roll-ups' },
  { table: 'hourly_users', zone: 'aggregated', period: 'hourly', served: true, description: 'exact distinct users per hour, overall and per device' },
  { table: 'hourly_playback', zone: 'aggregated', period: 'hourly', served: true, description: 'plays, pauses, completes, rebuffers per hour and content' },
  { table: 'binge_users', zone: 'aggregated', period: 'daily', served: true, shard: { orderBy: 'user_id' }, description: 'users with 3 completes within 4 hours, per day' },
  { table: 'retention_cohorts', zone: 'aggregated', period: 'daily', served: true, description: 'd1/d7/d14/d28 retention and churn per cohort day, as of each day' },
  { table: 'daily_aggregates_with_dimensions', zone: 'aggregated', period: 'daily', served: true, view: 'daily_obt', description: 'the one big table: day x device x app version x country with ALL rows' },
  { table: 'daily_sessions', zone: 'aggregated', period: 'daily', served: true, description: 'daily session metrics by device of the first event' },
  { table: 'clicks_to_play', zone: 'aggregated', period: 'daily', served: true, description: 'histogram of navigation events before the first play' },
  { table: 'top_paths', zone: 'aggregated', period: 'daily', served: true, description: 'the 20 most frequent paths to a first play per day' },
  { table: 'user_lifecycle', zone: 'aggregated', period: 'daily', served: false, shard: { orderBy: 'user_id' }, description: "each user's lifecycle state on the day and in its ISO week to date" },
  { table: 'lifecycle', zone: 'aggregated', period: 'daily', served: true, description: 'new / returning / resurrecting / dormant users of the day and of its ISO week to date' },
  { table: 'retention_variants', zone: 'aggregated', period: 'daily', served: true, description: 'recurring, unbounded and weekly retention per cohort, as of each day' },
  { table: 'churn_risk', zone: 'aggregated', period: 'daily', served: true, shard: { orderBy: 'user_id' }, description: 'users active >= 3 of the 14 days before the last 7 and none since, per day, with the reason' },
  { table: 'user_funnels', zone: 'aggregated', period: 'daily', served: true, shard: { orderBy: 'funnel, user_id' }, description: "each declared funnel's entrants of the day: the steps their best attempt reached and when" },
  { table: 'funnel_days', zone: 'aggregated', period: 'daily', served: true, description: 'the declared funnels the day was computed for, with the steps and window used (a day without its row is not computed, not 0)' },
];

/** The tables a period kind publishes, in computing order. */
export function lakeTables(period: PeriodKind): readonly LakeTable[] {
  return LAKE_TABLES.filter((t) => t.period === period);
}

/**
 * Columns of the raw events Parquet (and of processed/events), as DuckDB types.
 * The contract's fields, the derived dimensions, received_at, the Kafka position,
 * and the fields the contract does not know as one JSON column.
 */
export const RAW_EVENT_COLUMNS = {
  event_id: 'VARCHAR',
  event_type: 'VARCHAR',
  user_id: 'VARCHAR',
  session_id: 'VARCHAR',
  ts: 'BIGINT',
  schema_version: 'INTEGER',
  device_type: 'VARCHAR',
  country: 'VARCHAR',
  app_version: 'VARCHAR',
  content_id: 'VARCHAR',
  video_quality: 'VARCHAR',
  playback_position: 'DOUBLE',
  duration_ms: 'DOUBLE',
  page: 'VARCHAR',
  target: 'VARCHAR',
  location: 'VARCHAR',
  user_agent: 'VARCHAR',
  ip_address: 'VARCHAR',
  received_at: 'BIGINT',
  kafka_partition: 'INTEGER',
  kafka_offset: 'BIGINT',
  /** JSON text: unknown top-level fields plus unknown keys of properties/context, or NULL. */
  extra: 'VARCHAR',
  /**
   * The device's own `timestamp` and its `sent_at`, when the client sent `sent_at` and ts was corrected
   * for its clock skew (ts = timestamp + received_at − sent_at); NULL otherwise. Last, so objects
   * written before they existed read them as NULL.
   */
  device_ts: 'BIGINT',
  sent_at: 'BIGINT',
  /** schema_version 2 on: the app that sent the event, and the device's OS and model (`properties.device`); NULL for version 1. */
  app_id: 'VARCHAR',
  device_os: 'VARCHAR',
  device_model: 'VARCHAR',
} as const;
export type RawEventColumn = keyof typeof RAW_EVENT_COLUMNS;

export interface QualityCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** Written last by a batch run: its existence is what "published" means. */
export interface RunManifest {
  kind: PeriodKind;
  period: string;
  runId: string;
  startedAt: string;
  publishedAt: string;
  /** Raw objects the run read, with their ETags (what "dirty" is judged against). */
  inputs: { key: string; etag: string; size: number }[];
  /**
   * table name -> published object key (`lakePaths.table(…, runId)`). Readers resolve a
   * period's tables only through this: other objects under the period's folder are
   * superseded or unfinished runs, removed after BATCH_SUPERSEDED_GRACE_MS.
   */
  outputs: Record<string, string>;
  rowCounts: Record<string, number>;
  checks: QualityCheck[];
  /** Duplicates seen in the raw input: natural (same id, same payload) and synthetic (same id, other payload). */
  duplicates?: { natural: number; synthetic: number };
  shards?: number;
  /**
   * Daily runs: an order-independent digest of the day's active users. Later days'
   * cohorts and first_seen_day read this day's activity, so a re-run that changes
   * it marks every later published day dirty.
   */
  activeUsersDigest?: string;
}

/**
 * Written when a run publishes (conditionally: If-Match on the version it read, so
 * two publishes never lose each other's update). Times are epoch ms (exclusive ends).
 * It is a summary for operators: the serving layer decides per period (published?
 * dirty?) from the manifests and dirty markers themselves, so one old or dirty
 * period never drags the served boundary back.
 */
export interface Watermark {
  /** End of the latest contiguous run of published, clean hours (the run that ends at the newest clean hour). */
  hourlyEnd: number | null;
  /** Start of that run. */
  hourlyStart?: number | null;
  /** End of the latest contiguous run of published, clean days. */
  dailyEnd: number | null;
  dailyStart?: number | null;
  /** The operator's pin (from `_manifests/pin.json`): when set, serving uses min(pin, computed). */
  pinnedEnd?: number | null;
  updatedAt: string;
}

/** `_manifests/pin.json`: written only by the pin endpoint. */
export interface Pin {
  pinnedEnd: number | null;
  updatedAt: string;
  keyId: string;
  requestId: string;
}

/** `_manifests/audit/pin/…`: one per pin change. */
export interface PinAudit {
  action: 'pin' | 'unpin';
  pinnedEnd: number | null;
  previousPinnedEnd: number | null;
  keyId: string;
  requestId: string;
  at: string;
}

/**
 * One object per period. The lake writer overwrites it on every late write (a
 * fresh markedAt). A run that clears it does not delete it: it replaces it with a
 * tombstone (clearedAt set) by a conditional write on the ETag it judged, so a
 * marker written meanwhile (another ETag) is never lost — S3/MinIO have no
 * conditional delete. Readers treat a tombstone as no marker.
 */
export interface DirtyMarker {
  kind: PeriodKind;
  period: string;
  /** Epoch ms when the late data was written; a run that started after this clears the marker. */
  markedAt: number;
  reason: string;
  /** Set on a cleared marker (tombstone): epoch ms of the clear, and the run that cleared it. */
  clearedAt?: number;
  clearedBy?: string;
}

/** `_manifests/retention/<zone>/dt=…json`: retention removed (or is removing) this day's objects of the zone. */
export interface RawRetentionRecord {
  zone: 'raw' | 'processed' | 'aggregated';
  day: string;
  removedAt: string;
  objects: number;
  /** The configured age that made the day eligible. */
  maxAgeDays: number;
}

/** Columns of the dead-letter Parquet under raw/dlq/, as DuckDB types. */
export const DLQ_COLUMNS = {
  reason: 'VARCHAR',
  detail: 'VARCHAR',
  received_at: 'BIGINT',
  /** The original bytes of the rejected event, as UTF-8 text. */
  raw: 'VARCHAR',
  /** Position of the event in its request batch (0-based), when it came in a batch. */
  event_index: 'INTEGER',
  /** The topic the record was read from: events.dlq, or events.raw for an unreadable record. */
  kafka_topic: 'VARCHAR',
  kafka_partition: 'INTEGER',
  kafka_offset: 'BIGINT',
} as const;
export type DlqColumn = keyof typeof DLQ_COLUMNS;

/**
 * The latest contiguous run of published, clean periods: scanning back from the
 * newest clean period while the previous period is published and clean. An old
 * period (a device clock in 2015) or a dirty one in the middle never drags it
 * back; `starts` are period starts in ms, `size` the period length.
 */
export function latestCleanRun(starts: Iterable<number>, dirty: ReadonlySet<number>, size: number): { start: number | null; end: number | null } {
  const clean = new Set([...starts].filter((t) => !dirty.has(t)));
  if (clean.size === 0) return { start: null, end: null };
  const newest = Math.max(...clean);
  let start = newest;
  while (clean.has(start - size)) start -= size;
  return { start, end: newest + size };
}
