/**
 * Typed configuration. Every port, topic, bucket and interval comes from here;
 * each value can be overridden by an environment variable and defaults to the
 * local native stack started by `npm run infra:up`.
 *
 * The same variable names are used by docker-compose.yml.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EVENT_TYPES } from './contract';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

type Env = Record<string, string | undefined>;

function str(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v === '' ? fallback : v;
}

function int(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new ConfigError(`${name} must be an integer >= ${min}, got "${raw}"`);
  }
  return n;
}

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const v = str(env, name, fallback);
  if (!(values as readonly string[]).includes(v)) throw new ConfigError(`${name} must be ${values.join(' or ')}, got "${v}"`);
  return v as T;
}

function ints(env: Env, name: string, fallback: number[], count: number): number[] {
  const raw = list(env, name, fallback.map(String));
  if (raw.length !== count || raw.some((v) => !/^\d+$/.test(v) || Number(v) < 1)) {
    throw new ConfigError(`${name} must list ${count} ports, got "${env[name]}"`);
  }
  return raw.map(Number);
}

/**
 * The replicated stack (`infra:up -- --ha`): STACK_HA=true, or the marker infra:up leaves in its
 * STACK_HOME, so every process started with that STACK_HOME finds the brokers and Sentinels.
 */
export const HA_MARKER = 'ha-stack';
function haFlag(env: Env): boolean | undefined {
  const raw = (env.STACK_HA ?? '').trim();
  return raw === '' ? undefined : raw === 'true' || raw === '1';
}

function list(env: Env, name: string, fallback: string[]): string[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

/** `false` (default: req.ip is the socket's peer), `true`, a hop count, or a list of proxy addresses/CIDRs. */
function trustProxy(env: Env, name: string): boolean | string[] | ((addr: string, hop: number) => boolean) {
  const raw = (env[name] ?? '').trim();
  if (raw === '' || raw === 'false') return false;
  if (raw === 'true') return true;
  if (/^\d+$/.test(raw)) {
    // A hop count: trust that many proxies in front (what proxy-addr does with a number).
    const hops = Number(raw);
    return (_addr, hop) => hop < hops;
  }
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Env = process.env) {
  // The HA stack has its own home (and data) by default, beside the single-node one.
  const stackHome = path.resolve(str(env, 'STACK_HOME', path.join(REPO_ROOT, haFlag(env) ? '.stack-ha' : '.stack')));
  const kafkaPort = int(env, 'KAFKA_PORT', 9092, 1);
  const redisPort = int(env, 'REDIS_PORT', 6380, 1);
  const minioPort = int(env, 'MINIO_PORT', 9000, 1);
  const temporalPort = int(env, 'TEMPORAL_PORT', 7233, 1);
  const kafkaControllerPort = int(env, 'KAFKA_CONTROLLER_PORT', 9093, 1);
  const ha = haFlag(env) ?? fs.existsSync(path.join(stackHome, HA_MARKER));
  // HA: three brokers, each with its own client and controller port (9092/9093, 9094/9095, 9096/9097 by default).
  const kafkaHaPorts = ints(env, 'KAFKA_HA_PORTS', [kafkaPort, kafkaPort + 2, kafkaPort + 4], 3);
  const kafkaHaControllerPorts = ints(env, 'KAFKA_HA_CONTROLLER_PORTS', [kafkaControllerPort, kafkaControllerPort + 2, kafkaControllerPort + 4], 3);
  const redisSentinelPorts = ints(env, 'REDIS_SENTINEL_PORTS', [26380, 26381, 26382], 3);
  return {
    stack: {
      home: stackHome,
      kafkaControllerPort,
      kafkaPort,
      redisPort,
      minioPort,
      minioConsolePort: int(env, 'MINIO_CONSOLE_PORT', 9001, 1),
      temporalPort,
      temporalUiPort: int(env, 'TEMPORAL_UI_PORT', 8233, 1),
      /** Seconds a service may take to become healthy before infra:up gives up. */
      startTimeoutSec: int(env, 'STACK_START_TIMEOUT_SEC', 90, 1),
      /**
       * The replicated stack: 3 Kafka brokers (each also a controller), a Redis primary with a replica
       * and 3 Sentinels (quorum 2), MinIO erasure-coded over 4 drives. Off: the single-node stack.
       */
      ha: {
        enabled: ha,
        kafkaPorts: kafkaHaPorts,
        kafkaControllerPorts: kafkaHaControllerPorts,
        redisReplicaPort: int(env, 'REDIS_REPLICA_PORT', redisPort + 1, 1),
        redisSentinelPorts,
        /** Drives of the one MinIO process (EC:2 over 4: any one drive can go). */
        minioDrives: int(env, 'MINIO_DRIVES', 4, 4),
        /** A home whose installed Kafka jars and MinIO/Temporal binaries the HA home links to instead of installing again. */
        installFrom: path.resolve(str(env, 'STACK_HA_INSTALL_FROM', path.join(REPO_ROOT, '.stack'))),
      },
    },
    kafka: {
      brokers: list(env, 'KAFKA_BROKERS', ha ? kafkaHaPorts.map((p) => `127.0.0.1:${p}`) : [`127.0.0.1:${kafkaPort}`]),
      clientId: str(env, 'KAFKA_CLIENT_ID', 'clickstream'),
      rawTopic: str(env, 'TOPIC_RAW', 'events.raw'),
      dlqTopic: str(env, 'TOPIC_DLQ', 'events.dlq'),
      rawPartitions: int(env, 'TOPIC_RAW_PARTITIONS', 6, 1),
      retentionMs: int(env, 'TOPIC_RAW_RETENTION_MS', 7 * 24 * 3600 * 1000, 1),
      speedGroup: str(env, 'SPEED_GROUP', 'speed'),
      lakeGroup: str(env, 'LAKE_GROUP', 'lake'),
      /** Replicas of each topic ensureTopics creates (3 on the HA stack; existing topics keep theirs). */
      replicationFactor: int(env, 'TOPIC_REPLICATION_FACTOR', ha ? 3 : 1, 1),
      /** With acks=all, a write needs this many in-sync replicas: 2 of 3 survives one broker without losing an acknowledged write. */
      minInsyncReplicas: int(env, 'TOPIC_MIN_INSYNC_REPLICAS', ha ? 2 : 1, 1),
    },
    redis: {
      url: str(env, 'REDIS_URL', `redis://127.0.0.1:${redisPort}`),
      /** Prefix of every key this deployment writes; lets tests and tenants share one Redis. */
      keyPrefix: str(env, 'REDIS_KEY_PREFIX', 'cs:'),
      /** Sentinels (host:port,…) to ask for the primary instead of REDIS_URL; a promotion is followed without restart. */
      sentinels: list(env, 'REDIS_SENTINELS', ha ? redisSentinelPorts.map((p) => `127.0.0.1:${p}`) : []),
      /** The primary's name in Sentinel. */
      sentinelName: str(env, 'REDIS_SENTINEL_NAME', 'clickstream'),
    },
    s3: {
      endpoint: str(env, 'S3_ENDPOINT', `http://127.0.0.1:${minioPort}`),
      region: str(env, 'S3_REGION', 'us-east-1'),
      bucket: str(env, 'S3_BUCKET', 'lake'),
      accessKeyId: str(env, 'S3_ACCESS_KEY', 'minioadmin'),
      secretAccessKey: str(env, 'S3_SECRET_KEY', 'minioadmin'),
      forcePathStyle: str(env, 'S3_FORCE_PATH_STYLE', 'true') === 'true',
    },
    temporal: {
      address: str(env, 'TEMPORAL_ADDRESS', `127.0.0.1:${temporalPort}`),
      namespace: str(env, 'TEMPORAL_NAMESPACE', 'default'),
      taskQueue: str(env, 'TEMPORAL_TASK_QUEUE', 'clickstream-batch'),
      uiUrl: str(env, 'TEMPORAL_UI_URL', `http://localhost:${int(env, 'TEMPORAL_UI_PORT', 8233, 1)}`),
    },
    collector: {
      host: str(env, 'COLLECTOR_HOST', '0.0.0.0'),
      port: int(env, 'COLLECTOR_PORT', 8080, 0),
      apiKeys: list(env, 'COLLECTOR_API_KEYS', ['dev-ingest-key']),
      maxBatchEvents: int(env, 'COLLECTOR_MAX_BATCH_EVENTS', 1000, 1),
      maxBodyBytes: int(env, 'COLLECTOR_MAX_BODY_BYTES', 1024 * 1024, 1),
      maxInFlightEvents: int(env, 'COLLECTOR_MAX_IN_FLIGHT_EVENTS', 200_000, 1),
      /** …and of request bodies being parsed, validated or produced (bytes), malformed ones included. */
      maxInFlightBytes: int(env, 'COLLECTOR_MAX_IN_FLIGHT_BYTES', 256 * 1024 * 1024, 1024),
      /** Requests per minute per ingestion key (a busy SDK fleet shares a key: set this high). */
      rateLimitPerMin: int(env, 'COLLECTOR_RATE_LIMIT_PER_MIN', 1_200_000, 1),
      /** Requests per minute per client address without a valid key (failed attempts included). */
      anonymousRateLimitPerMin: int(env, 'COLLECTOR_ANONYMOUS_RATE_LIMIT_PER_MIN', 600, 1),
      /** Fastify's trustProxy: `false`, `true`, a hop count, or comma-separated addresses/CIDRs of your proxies. */
      trustProxy: trustProxy(env, 'COLLECTOR_TRUST_PROXY'),
      /** One event's record larger than this is rejected (size_violation) instead of failing a whole produce. */
      maxEventBytes: int(env, 'COLLECTOR_MAX_EVENT_BYTES', 64 * 1024, 1024),
      /** Produces of concurrent requests are coalesced for up to this long… */
      lingerMs: int(env, 'COLLECTOR_LINGER_MS', 2, 0),
      /**
       * …or until this many bytes / messages. A flush is split over the partitions of its lane, and each
       * partition's record batch must stay below the broker's message.max.bytes (4 MiB here): 3 MiB leaves room.
       */
      flushMaxBytes: int(env, 'COLLECTOR_FLUSH_MAX_BYTES', 3 * 1024 * 1024, 1024),
      flushMaxMessages: int(env, 'COLLECTOR_FLUSH_MAX_MESSAGES', 10_000, 1),
      /**
       * Idempotent producers sending in parallel, each owning the raw partitions p with
       * p % producers = its index (per-partition order and idempotence unchanged).
       */
      producers: int(env, 'COLLECTOR_PRODUCERS', 3, 1),
      /** A request whose produce is not acknowledged within this time is answered 503. */
      produceTimeoutMs: int(env, 'COLLECTOR_PRODUCE_TIMEOUT_MS', 10_000, 100),
      /** Retry-After (seconds) on 503 while Kafka is unreachable; also the reconnect probe interval. */
      retryAfterSec: int(env, 'COLLECTOR_RETRY_AFTER_SEC', 2, 1),
      /** `none` or `gzip` (the only codec kafkajs ships). */
      compression: str(env, 'COLLECTOR_COMPRESSION', 'none'),
    },
    serving: {
      host: str(env, 'SERVING_HOST', '0.0.0.0'),
      port: int(env, 'SERVING_PORT', 8090, 0),
      apiKeys: list(env, 'SERVING_API_KEYS', ['dev-read-key']),
      /** Keys allowed to change the watermark pin (PUT /v1/admin/watermark); separate from the read keys. */
      adminKeys: list(env, 'SERVING_ADMIN_KEYS', ['dev-admin-key']),
      /** Origins allowed by CORS; `*` allows any. */
      corsOrigins: list(env, 'SERVING_CORS_ORIGINS', ['*']),
      /** Requests per API key (or client address without one) per minute before 429. */
      rateLimitPerMin: int(env, 'SERVING_RATE_LIMIT_PER_MIN', 6000, 1),
      /** Requests per minute per client address without a valid key (failed attempts included). */
      anonymousRateLimitPerMin: int(env, 'SERVING_ANONYMOUS_RATE_LIMIT_PER_MIN', 120, 1),
      /** Fastify's trustProxy: `false`, `true`, a hop count, or comma-separated addresses/CIDRs of your proxies. */
      trustProxy: trustProxy(env, 'SERVING_TRUST_PROXY'),
      /** Manifests are polled this often besides the pub/sub notice (a missed notice costs at most this much). */
      syncIntervalMs: int(env, 'SERVING_SYNC_INTERVAL_MS', 15_000, 100),
      /** Where published batch tables are downloaded to for the embedded DuckDB. */
      dataDir: path.resolve(str(env, 'SERVING_DATA_DIR', path.join(REPO_ROOT, '.scratch', 'serving'))),
      duckdbThreads: int(env, 'SERVING_DUCKDB_THREADS', 1, 1),
      /** Most buckets one query may span (bad `from`/`to` otherwise answer 400). */
      maxBuckets: int(env, 'SERVING_MAX_BUCKETS', 5000, 1),
      /** Identical speed-layer reads within this many ms share one Redis round trip (0 = off). */
      speedCacheMs: int(env, 'SERVING_SPEED_CACHE_MS', 1000, 0),
      /** Alert when the batch watermark lags now by more than this fraction of the speed retention. */
      batchLagAlertFraction: int(env, 'SERVING_BATCH_LAG_ALERT_PCT', 75, 1) / 100,
    },
    batch: {
      scratchDir: path.resolve(str(env, 'BATCH_SCRATCH_DIR', path.join(REPO_ROOT, '.scratch'))),
      shards: int(env, 'BATCH_SHARDS', 4, 1),
      /** Parallel object downloads/uploads of one batch job. */
      ioConcurrency: int(env, 'BATCH_IO_CONCURRENCY', 8, 1),
      /** DuckDB worker threads per job (the machine's cores are shared with the other services). */
      duckdbThreads: int(env, 'BATCH_DUCKDB_THREADS', 2, 1),
      /** Compaction merges the raw objects of an hour smaller than this into objects of about this size. */
      compactTargetBytes: int(env, 'BATCH_COMPACT_TARGET_BYTES', 128 * 1024 * 1024, 1),
      /** applyRetention removes raw days older than this (only days whose daily run is published and clean). */
      rawMaxAgeDays: int(env, 'BATCH_RAW_MAX_AGE_DAYS', 30, 1),
      /**
       * Lateness horizon: an event whose (clock-corrected) time is older than this when it
       * reaches the collector is dead-lettered as too_late instead of re-opening an old
       * period (an operator can replay it into an explicit backfill). Well inside raw retention.
       */
      latenessHorizonMs: int(env, 'BATCH_LATENESS_HORIZON_MS', 7 * 24 * 3600 * 1000, 3_600_000),
      /** How often the serving layer lists dirty markers: late data leaves the exact view within this. */
      dirtyPollMs: int(env, 'BATCH_DIRTY_POLL_MS', 2_000, 100),
      /** Dead letters (raw/dlq/) older than this many days of arrival are removed by the retention run (0 keeps them). */
      dlqMaxAgeDays: int(env, 'BATCH_DLQ_MAX_AGE_DAYS', 90, 0),
      /**
       * processed/events and processed/sessions of days older than this are removed (0 keeps them);
       * must exceed BATCH_RAW_MAX_AGE_DAYS. aggregated/ and user_daily_activity are kept.
       */
      processedMaxAgeDays: int(env, 'BATCH_PROCESSED_MAX_AGE_DAYS', 0, 0),
      /** aggregated/ (the batch views) of days older than this are removed (0 keeps them); must exceed BATCH_PROCESSED_MAX_AGE_DAYS. */
      aggregatedMaxAgeDays: int(env, 'BATCH_AGGREGATED_MAX_AGE_DAYS', 0, 0),
      /**
       * A superseded run's objects (and those of a run that died before its manifest) are removed
       * only this long after the manifest that replaced them: a reader that read the previous
       * manifest a moment ago can still fetch every object it names.
       */
      supersededGraceMs: int(env, 'BATCH_SUPERSEDED_GRACE_MS', 3_600_000, 0),
    },
    lake: {
      /** A raw file rolls when its buffered records reach this many bytes (their flat NDJSON encoding, before Parquet/zstd). */
      rollBytes: int(env, 'LAKE_ROLL_BYTES', 128 * 1024 * 1024, 1),
      /** …or when its oldest record has waited this long. */
      rollAgeSec: int(env, 'LAKE_ROLL_AGE_SEC', 60, 1),
      /** Consumption pauses while buffered + uploading bytes exceed this (back-pressure on slow S3). */
      maxBufferBytes: int(env, 'LAKE_MAX_BUFFER_BYTES', 512 * 1024 * 1024, 1),
      /**
       * A partition at least this many messages behind is catching up: after each of its batches, its open
       * files the batch did not add to are rolled at once (the stream has moved past their hour).
       */
      catchupLag: int(env, 'LAKE_CATCHUP_LAG', 10_000, 1),
      uploadConcurrency: int(env, 'LAKE_UPLOAD_CONCURRENCY', 2, 1),
      /** DuckDB threads of the Parquet encoder (the writer shares the cores with the speed layer). */
      duckdbThreads: int(env, 'LAKE_DUCKDB_THREADS', 2, 1),
      /** Multipart part size for large objects. */
      partSizeBytes: int(env, 'LAKE_PART_SIZE_BYTES', 16 * 1024 * 1024, 5 * 1024 * 1024),
      /** How long a crashed writer holds its partitions before the group hands them to another member. */
      sessionTimeoutMs: int(env, 'LAKE_SESSION_TIMEOUT_MS', 10_000, 6_000),
      /**
       * Consumer-lag alerts on the lake group (raised by the serving layer): more messages than this behind,
       * or no committed progress for this long while behind. Files roll after LAKE_ROLL_AGE_SEC, so its
       * offsets normally trail by that much traffic.
       */
      alertMaxLag: int(env, 'LAKE_ALERT_MAX_LAG', 2_000_000, 0),
      alertMaxStallMs: int(env, 'LAKE_ALERT_MAX_STALL_MS', 5 * 60_000, 1000),
      /** /metrics and /health of the lake writer (0 = any free port). */
      host: str(env, 'LAKE_WRITER_HOST', '0.0.0.0'),
      port: int(env, 'LAKE_WRITER_PORT', 9471, 0),
    },
    speed: {
      /** /metrics and /health of the speed layer (0 = any free port). */
      host: str(env, 'SPEED_HOST', '0.0.0.0'),
      port: int(env, 'SPEED_PORT', 9472, 0),
      /** A fresh group with no offsets in Redis starts from the earliest offset (late events are counted, not lost). */
      fromBeginning: str(env, 'SPEED_FROM_BEGINNING', 'true') === 'true',
      partitionsConsumedConcurrently: int(env, 'SPEED_PARTITIONS_CONCURRENCY', 2, 1),
      /**
       * Larger fetches = larger batches = fewer Redis steps per event: a step's cost is mostly per
       * distinct key/field/user, which grows far slower than the batch (kafkajs' default is 1 MiB).
       */
      maxBytesPerPartition: int(env, 'SPEED_MAX_BYTES_PER_PARTITION', 4 * 1024 * 1024, 1024),
      /** Upper bound of one fetch over all partitions (kafkajs' default is 10 MiB). */
      maxBytes: int(env, 'SPEED_MAX_BYTES', 32 * 1024 * 1024, 1024),
      /** Event-time retention of the per-second counts; older events skip that family. */
      secondRetentionMs: int(env, 'SPEED_SECOND_RETENTION_MS', 2 * 3600 * 1000, 1000),
      /** Event-time retention of every other family; older events are counted as late and left to the batch layer. */
      retentionMs: int(env, 'SPEED_RETENTION_MS', 48 * 3600 * 1000, 60_000),
      /** Distinct device_type values per day of event time before new ones count as `other` (keys stay bounded). */
      maxDeviceTypesPerDay: int(env, 'SPEED_MAX_DEVICE_TYPES_PER_DAY', 200, 1),
      /** How long an event-time minute's set of seen event_ids lives after its last write (memory ~56 B per event). */
      dedupeWindowMs: int(env, 'SPEED_DEDUPE_WINDOW_MS', 5 * 60 * 1000, 1000),
      /** Backoff ceiling while Redis is unreachable (the batch is retried, never dropped). */
      maxRetryBackoffMs: int(env, 'SPEED_MAX_RETRY_BACKOFF_MS', 5000, 10),
      /** A Redis step not answered within this is retried (a hung Redis must not stall the partition silently). */
      redisTimeoutMs: int(env, 'SPEED_REDIS_TIMEOUT_MS', 10_000, 100),
      /** A killed consumer's partitions move to the others after this long (Kafka's minimum is 6 s). */
      sessionTimeoutMs: int(env, 'SPEED_SESSION_TIMEOUT_MS', 10_000, 6000),
      /**
       * Bounds of one Redis step (one script call): a consumed batch whose fold would exceed any of them is
       * applied as several steps, each over a sub-range of offsets with its own offset guard. What a step
       * costs Redis (and blocks it for) grows with its arguments, not with the events behind them.
       */
      stepMaxArgs: int(env, 'SPEED_STEP_MAX_ARGS', 100_000, 1000),
      stepMaxKeys: int(env, 'SPEED_STEP_MAX_KEYS', 5_000, 100),
      stepMaxBytes: int(env, 'SPEED_STEP_MAX_BYTES', 4 * 1024 * 1024, 64 * 1024),
      /** /health turns degraded once the same step failed this many times in a row. */
      degradedAfterFailures: int(env, 'SPEED_DEGRADED_AFTER_FAILURES', 3, 1),
      alerts: {
        intervalMs: int(env, 'SPEED_ALERT_INTERVAL_MS', 5000, 100),
        /** Rates are measured over this trailing window. */
        windowMs: int(env, 'SPEED_ALERT_WINDOW_MS', 60_000, 1000),
        maxErrorRatePct: int(env, 'SPEED_ALERT_MAX_ERROR_RATE_PCT', 5, 0),
        /** 0 disables the rule: an idle dev stack is not an incident. */
        minEventsPerSec: int(env, 'SPEED_ALERT_MIN_EVENTS_PER_SEC', 0, 0),
        maxLag: int(env, 'SPEED_ALERT_MAX_LAG', 100_000, 0),
        /** The speed group behind with no committed progress for this long (raised by the serving layer). */
        maxStallMs: int(env, 'SPEED_ALERT_MAX_STALL_MS', 60_000, 1000),
        maxLatencyMs: int(env, 'SPEED_ALERT_MAX_LATENCY_MS', 5000, 0),
      },
      /**
       * The most event ids one arrival epoch's dedupe set remembers (~56 B each; two epochs live at once, so
       * ≤ 2 × this × 56 B of Redis). Past it, events are still counted once but not remembered: a later copy of
       * one of them counts again in the speed views (speed_dedupe_unremembered_total; the batch layer is exact).
       */
      dedupeMaxIds: int(env, 'SPEED_DEDUPE_MAX_IDS', 10_000_000, 1),
      /**
       * Keep each user's feature hash for GET /v1/users/{id}/features (docs/metrics.md "User features").
       * It costs Redis ~8 µs per event (docs/benchmarks.md); a deployment that does not serve the
       * features turns it off, and the route then answers 404 for every user.
       */
      userFeatures: oneOf(env, 'SPEED_USER_FEATURES', ['true', 'false'], 'true') === 'true',
    },
    orchestration: {
      /** /metrics and /health of the batch worker (0 = any free port). */
      workerHost: str(env, 'WORKER_HOST', '0.0.0.0'),
      workerPort: int(env, 'WORKER_PORT', 9473, 0),
      /** Prepended to every batch workflow id (`hourly-…`, `daily-…`); empty in production, per-test elsewhere. */
      workflowIdPrefix: str(env, 'TEMPORAL_WORKFLOW_ID_PREFIX', ''),
      /** Schedules are named `<prefix>hourly`, `<prefix>daily`, `<prefix>reconcile`, `<prefix>retention`. */
      scheduleIdPrefix: str(env, 'TEMPORAL_SCHEDULE_ID_PREFIX', 'batch-'),
      /** The worker creates (or updates) the schedules when it starts. */
      createSchedules: str(env, 'TEMPORAL_CREATE_SCHEDULES', 'true') === 'true',
      /** DuckDB jobs are CPU- and disk-heavy: few at a time per worker; scale with more workers. */
      maxConcurrentActivities: int(env, 'WORKER_MAX_CONCURRENT_ACTIVITIES', 2, 1),
      maxConcurrentWorkflowTasks: int(env, 'WORKER_MAX_CONCURRENT_WORKFLOW_TASKS', 20, 2),
      /** Upper bound of one batch step (an hourly run, a daily shard, a publish). */
      activityTimeoutSec: int(env, 'ACTIVITY_TIMEOUT_SEC', 3600, 1),
      /** A worker that dies mid-step is noticed after this long and the step is retried elsewhere. */
      activityHeartbeatSec: int(env, 'ACTIVITY_HEARTBEAT_SEC', 60, 1),
      activityMaxAttempts: int(env, 'ACTIVITY_MAX_ATTEMPTS', 5, 1),
      activityRetryInitialMs: int(env, 'ACTIVITY_RETRY_INITIAL_MS', 2000, 1),
      activityRetryMaxMs: int(env, 'ACTIVITY_RETRY_MAX_MS', 120_000, 1),
      /** Minute past each hour when the previous hour runs (late stragglers get this long). */
      hourlyMinute: int(env, 'SCHEDULE_HOURLY_MINUTE', 5, 0),
      /** Minutes past midnight UTC when the previous day runs (after the last hourly run). */
      dailyMinute: int(env, 'SCHEDULE_DAILY_MINUTE', 30, 0),
      reconcileEveryMin: int(env, 'SCHEDULE_RECONCILE_EVERY_MIN', 15, 1),
      /** Hour (UTC) of the daily raw-retention run. */
      retentionHour: int(env, 'SCHEDULE_RETENTION_HOUR', 3, 0),
      /** Hour (UTC) of the daily compaction of the previous day's raw objects. */
      compactHour: int(env, 'SCHEDULE_COMPACT_HOUR', 2, 0),
      /** After downtime, missed schedule runs younger than this are still started. */
      catchupWindowSec: int(env, 'SCHEDULE_CATCHUP_WINDOW_SEC', 24 * 3600, 10),
      backfillConcurrency: int(env, 'BACKFILL_CONCURRENCY', 4, 1),
      /** A backfill continues as new after this many periods, keeping its history small. */
      backfillPeriodsPerRun: int(env, 'BACKFILL_PERIODS_PER_RUN', 100, 1),
      /** Parallel child runs of reconcileLateData and of dailyBatch's missing hours. */
      childConcurrency: int(env, 'ORCHESTRATION_CHILD_CONCURRENCY', 4, 1),
      /** When a period is already running elsewhere, wait this long before trying again. */
      conflictRetrySec: int(env, 'ORCHESTRATION_CONFLICT_RETRY_SEC', 30, 1),
      conflictMaxRetries: int(env, 'ORCHESTRATION_CONFLICT_MAX_RETRIES', 20, 0),
    },
    logLevel: str(env, 'LOG_LEVEL', 'info'),
    /** What the collector keeps of `context.ip_address` (docs/metrics.md, "IP addresses"): never the full address. */
    privacy: ipPolicy(env),
    import: {
      /** Rows per step of `npm run import`: each step's objects are uploaded, then its checkpoint written (the unit a crash re-does). */
      chunkRows: int(env, 'IMPORT_CHUNK_ROWS', 50_000, 1),
    },
    erasure: {
      /**
       * Key of the HMAC-SHA256 that names erased users in audit records and derives a request's id
       * (never the ids in clear). The default suits the local stack only: set a secret in production.
       */
      auditKey: str(env, 'ERASURE_AUDIT_KEY', DEFAULT_ERASURE_AUDIT_KEY),
      /** Scan, rewrite and re-scan rounds before an erasure that keeps finding the users fails. */
      maxRounds: int(env, 'ERASURE_MAX_ROUNDS', 3, 1),
    },
    /** The funnels the daily batch precomputes (docs/metrics.md, "Funnels"); an ad-hoc query with the same steps and window reads them. */
    funnels: funnelsOf(env),
  };
}

/** The erasure audit key of the local stack; a production serving layer refuses it (common/http/production.ts). */
export const DEFAULT_ERASURE_AUDIT_KEY = 'local-stack-erasure-audit-key';

/** IP_PSEUDONYMISATION `truncate` (IPv4 /24, IPv6 /48) or `hash` (HMAC-SHA256 keyed by IP_HASH_SALT, per UTC day with IP_HASH_ROTATION=daily). */
function ipPolicy(env: Env) {
  const mode = oneOf(env, 'IP_PSEUDONYMISATION', ['truncate', 'hash'], 'truncate');
  const rotation = oneOf(env, 'IP_HASH_ROTATION', ['none', 'daily'], 'none');
  const salt = str(env, 'IP_HASH_SALT', '');
  // A short or public salt makes the hash a lookup table away from the address (2^32 IPv4 addresses).
  if (mode === 'hash' && salt.length < 16) throw new ConfigError('IP_PSEUDONYMISATION=hash needs IP_HASH_SALT (a secret of at least 16 characters)');
  return { ipMode: mode, ipHashSalt: salt, ipHashRotation: rotation };
}

export type Config = ReturnType<typeof loadConfig>;

let cached: Config | undefined;
/** The process-wide configuration, read once from process.env. */
export function config(): Config {
  cached ??= loadConfig();
  return cached;
}

/** The event properties a funnel step may filter on (one per step). */
export const FUNNEL_PROPERTIES = ['content_id', 'page'] as const;
export const FUNNEL_MAX_STEPS = 8;
export const FUNNEL_DEFAULT_WINDOW_MS = 3_600_000;
export const FUNNEL_MAX_WINDOW_MS = 86_400_000;

export interface FunnelStep {
  event_type: string;
  property: (typeof FUNNEL_PROPERTIES)[number] | null;
  value: string | null;
}

export interface FunnelDef {
  name: string;
  steps: FunnelStep[];
  window_ms: number;
}

/** One step as the API and FUNNELS spell it: `event_type` or `event_type:property=value`. */
export const FUNNEL_STEP_RE = /^([a-z_]+)(?::([a-z_]+)=([^,:=\s]{1,128}))?$/;

/** `page_view,click:page=home,…` into steps; throws on an unknown event type or property, or a count outside 2..8. */
export function parseFunnelSteps(steps: readonly string[]): FunnelStep[] {
  if (steps.length < 2 || steps.length > FUNNEL_MAX_STEPS) throw new ConfigError(`a funnel has 2 to ${FUNNEL_MAX_STEPS} steps, not ${steps.length}`);
  return steps.map((text) => {
    const m = FUNNEL_STEP_RE.exec(text);
    if (!m) throw new ConfigError(`funnel step "${text}" is not event_type or event_type:property=value`);
    if (!(EVENT_TYPES as readonly string[]).includes(m[1])) throw new ConfigError(`funnel step "${text}": unknown event type ${m[1]}`);
    if (m[2] !== undefined && !(FUNNEL_PROPERTIES as readonly string[]).includes(m[2])) {
      throw new ConfigError(`funnel step "${text}": a step filters on ${FUNNEL_PROPERTIES.join(' or ')}, not ${m[2]}`);
    }
    return { event_type: m[1], property: (m[2] as FunnelStep['property']) ?? null, value: m[3] ?? null };
  });
}

/** FUNNELS: a JSON list of {name, steps, window_ms}; by default browse to play, the simulator's main path. */
function funnelsOf(env: Env): FunnelDef[] {
  const raw = str(env, 'FUNNELS', JSON.stringify([{ name: 'browse_to_play', steps: ['page_view', 'click', 'video_play', 'video_complete'], window_ms: FUNNEL_DEFAULT_WINDOW_MS }]));
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(`FUNNELS must be a JSON list of {name, steps, window_ms}, got "${raw}"`);
  }
  if (!Array.isArray(parsed)) throw new ConfigError('FUNNELS must be a JSON list of {name, steps, window_ms}');
  const names = new Set<string>();
  return parsed.map((f: { name?: unknown; steps?: unknown; window_ms?: unknown }) => {
    const name = typeof f?.name === 'string' ? f.name : '';
    if (!/^[a-z0-9_]{1,64}$/.test(name) || names.has(name)) throw new ConfigError(`FUNNELS: each funnel needs a unique name of [a-z0-9_]{1,64}, got "${String(f?.name)}"`);
    names.add(name);
    if (!Array.isArray(f.steps) || !f.steps.every((s) => typeof s === 'string')) throw new ConfigError(`FUNNELS ${name}: steps must be a list of strings`);
    const windowMs = f.window_ms ?? FUNNEL_DEFAULT_WINDOW_MS;
    if (!Number.isInteger(windowMs) || (windowMs as number) < 1 || (windowMs as number) > FUNNEL_MAX_WINDOW_MS) {
      throw new ConfigError(`FUNNELS ${name}: window_ms must be an integer from 1 to ${FUNNEL_MAX_WINDOW_MS}`);
    }
    return { name, steps: parseFunnelSteps(f.steps as string[]), window_ms: windowMs as number };
  });
}
