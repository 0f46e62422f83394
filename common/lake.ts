/**
 * The lake contract: object layout, the raw Parquet schema, and the manifest
 * through which batch runs publish and the serving layer finds the watermark.
 * The lake writer, the batch layer, the serving layer and the tests all use
 * these functions; nobody spells a lake path by hand.
 *
 * Layout (one bucket, Hive-style partitions, zstd Parquet):
 *   raw/events/dt=YYYY-MM-DD/hour=HH/p<partition>-<firstOffset>-<lastOffset>.parquet   master dataset, immutable
 *   raw/dlq/dt=YYYY-MM-DD/p<partition>-<firstOffset>-<lastOffset>.parquet              dead letters
 *   processed/<table>/dt=YYYY-MM-DD/[hour=HH/]part-0.parquet                             cleaned, de-duplicated
 *   aggregated/<table>/dt=YYYY-MM-DD/[hour=HH/]part-0.parquet                            batch views
 *   _staging/<runId>/…                                                                   a run's outputs before publish
 *   _manifests/hourly/dt=YYYY-MM-DD/hour=HH.json                                         what an hourly run published
 *   _manifests/daily/dt=YYYY-MM-DD.json                                                  what a daily run published
 *   _manifests/dirty/hourly/dt=YYYY-MM-DD/hour=HH.json                                   an hour that must be recomputed
 *   _manifests/dirty/daily/dt=YYYY-MM-DD.json                                            a day that must be recomputed
 *   _manifests/watermark.json                                                            the batch watermark
 */

export type Zone = 'processed' | 'aggregated';
export type PeriodKind = 'hourly' | 'daily';

/** An hour is `YYYY-MM-DDTHH` (UTC); a day is `YYYY-MM-DD`. */
export const HOUR_RE = /^\d{4}-\d{2}-\d{2}T\d{2}$/;
export const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;

export function hourId(ts: number): string {
  return new Date(ts).toISOString().slice(0, 13);
}
export function dayId(ts: number): string {
  return new Date(ts).toISOString().slice(0, 10);
}
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
  /** The one published object of a table for a period. */
  table(zone: Zone, table: string, period: string): string {
    if (HOUR_RE.test(period)) {
      const { dt, hh } = splitHour(period);
      return `${zone}/${table}/dt=${dt}/hour=${hh}/part-0.parquet`;
    }
    dayStartMs(period);
    return `${zone}/${table}/dt=${period}/part-0.parquet`;
  },
  staging(runId: string, finalKey: string): string {
    return `_staging/${runId}/${finalKey}`;
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
  /** table name -> published object key */
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

/** Written when a run publishes; dirty markers pull it back. Times are epoch ms (exclusive ends). */
export interface Watermark {
  /** End of the latest contiguous run of published, clean hours. */
  hourlyEnd: number | null;
  /** End of the latest contiguous run of published, clean days. */
  dailyEnd: number | null;
  /** An operator's pin: when set, serving uses min(pin, computed). */
  pinnedEnd?: number | null;
  updatedAt: string;
}

export interface DirtyMarker {
  kind: PeriodKind;
  period: string;
  /** Epoch ms when the late data was written; a run that started after this clears the marker. */
  markedAt: number;
  reason: string;
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
