/**
 * Typed configuration. Every port, topic, bucket and interval comes from here;
 * each value can be overridden by an environment variable and defaults to the
 * local native stack started by `npm run infra:up`.
 *
 * The same variable names are used by docker-compose.yml.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

function list(env: Env, name: string, fallback: string[]): string[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Env = process.env) {
  const stackHome = path.resolve(str(env, 'STACK_HOME', path.join(REPO_ROOT, '.stack')));
  const kafkaPort = int(env, 'KAFKA_PORT', 9092, 1);
  const redisPort = int(env, 'REDIS_PORT', 6380, 1);
  const minioPort = int(env, 'MINIO_PORT', 9000, 1);
  const temporalPort = int(env, 'TEMPORAL_PORT', 7233, 1);
  return {
    stack: {
      home: stackHome,
      kafkaControllerPort: int(env, 'KAFKA_CONTROLLER_PORT', 9093, 1),
      kafkaPort,
      redisPort,
      minioPort,
      minioConsolePort: int(env, 'MINIO_CONSOLE_PORT', 9001, 1),
      temporalPort,
      temporalUiPort: int(env, 'TEMPORAL_UI_PORT', 8233, 1),
      /** Seconds a service may take to become healthy before infra:up gives up. */
      startTimeoutSec: int(env, 'STACK_START_TIMEOUT_SEC', 90, 1),
    },
    kafka: {
      brokers: list(env, 'KAFKA_BROKERS', [`127.0.0.1:${kafkaPort}`]),
      clientId: str(env, 'KAFKA_CLIENT_ID', 'clickstream'),
      rawTopic: str(env, 'TOPIC_RAW', 'events.raw'),
      dlqTopic: str(env, 'TOPIC_DLQ', 'events.dlq'),
      rawPartitions: int(env, 'TOPIC_RAW_PARTITIONS', 6, 1),
      retentionMs: int(env, 'TOPIC_RAW_RETENTION_MS', 7 * 24 * 3600 * 1000, 1),
      speedGroup: str(env, 'SPEED_GROUP', 'speed'),
      lakeGroup: str(env, 'LAKE_GROUP', 'lake'),
    },
    redis: {
      url: str(env, 'REDIS_URL', `redis://127.0.0.1:${redisPort}`),
      /** Prefix of every key this deployment writes; lets tests and tenants share one Redis. */
      keyPrefix: str(env, 'REDIS_KEY_PREFIX', 'cs:'),
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
    },
    serving: {
      host: str(env, 'SERVING_HOST', '0.0.0.0'),
      port: int(env, 'SERVING_PORT', 8090, 0),
      apiKeys: list(env, 'SERVING_API_KEYS', ['dev-read-key']),
    },
    batch: {
      scratchDir: path.resolve(str(env, 'BATCH_SCRATCH_DIR', path.join(REPO_ROOT, '.scratch'))),
      shards: int(env, 'BATCH_SHARDS', 4, 1),
    },
    logLevel: str(env, 'LOG_LEVEL', 'info'),
  };
}

export type Config = ReturnType<typeof loadConfig>;

let cached: Config | undefined;
/** The process-wide configuration, read once from process.env. */
export function config(): Config {
  cached ??= loadConfig();
  return cached;
}
