/**
 * Factories for the clients of the stack's services, configured from one place, and the only
 * module that imports a Kafka client library. Producers are `@platformatic/kafka` (half of
 * kafkajs' CPU per message, docs/benchmarks.md); consumers, admin and tests stay on kafkajs,
 * which decodes as cheaply.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { Producer as PlatformaticProducer, ProduceAcks, compatibilityPartitioner, stringSerializers } from '@platformatic/kafka';
import { Redis } from 'ioredis';
import { Kafka, logLevel as KafkaLogLevel } from 'kafkajs';
import { config, type Config } from './config';
import { logger } from './log';

const IDEMPOTENT_RETRIES_NOTICE = 'Limiting retries for the idempotent producer';

/**
 * `probe`: a health check, answered once and quietly. `quiet`: a caller that provokes errors on
 * purpose and handles them (waiting for a fresh broker's partition leaders), reporting itself
 * what stays wrong; kafkajs would log every refused request at error level.
 */
export function kafkaClient(cfg: Config = config(), clientId = cfg.kafka.clientId, opts: { probe?: boolean; quiet?: boolean } = {}): Kafka {
  const log = logger('kafkajs');
  // Producers key by user_id; the v2 default partitioner is the one we want, so its migration notice is noise.
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  return new Kafka({
    clientId,
    brokers: cfg.kafka.brokers,
    connectionTimeout: 3000,
    requestTimeout: 30000,
    // A probe (health check) answers once, quietly; services retry with backoff.
    retry: opts.probe ? { retries: 0 } : { initialRetryTime: 200, retries: 8 },
    logLevel: opts.probe || opts.quiet ? KafkaLogLevel.NOTHING : KafkaLogLevel.WARN,
    logCreator: () => ({ level, log: entry }) => {
      const { message, ...rest } = entry;
      // Retries are bounded on purpose: a send that runs out answers 503 and the app resends; the
      // event id makes that resend harmless downstream. kafkajs warns about it on every producer.
      if (message.startsWith(IDEMPOTENT_RETRIES_NOTICE)) return void log.debug(rest, message);
      if (level <= KafkaLogLevel.ERROR) log.error(rest, message);
      else if (level === KafkaLogLevel.WARN) log.warn(rest, message);
      else log.debug(rest, message);
    },
  });
}

/** A record as the project produces it: strings, keyed by user. */
export interface ProducerRecord {
  topic: string;
  key: string;
  value: string;
  /** Fixed by the caller (see `keyPartition`); otherwise taken from the key the same way. */
  partition?: number;
}

export interface EventProducer {
  /** Partitions per topic, from a fresh metadata request (connecting if needed). Rejects while Kafka is unreachable. */
  partitions(topics: readonly string[]): Promise<Map<string, number>>;
  /** Resolves once Kafka acknowledged every record (acks=all); rejects if any was not. */
  send(records: ProducerRecord[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * The partition of a key: murmur2 masked positive, as Java's and kafkajs' default partitioners do
 * (platformatic's own default does not mask, and would move users to other partitions).
 */
export function keyPartition(key: string, partitions: number): number {
  return compatibilityPartitioner(undefined as never, Buffer.from(key)) % partitions;
}

/**
 * An idempotent producer (acks=all, one request in flight per broker, so per-partition order
 * holds across retries). Retries are bounded with backoff: idempotence alone would retry without
 * end, past the collector's produce deadline; a send that runs out answers 503 and the app resends,
 * which the event id makes harmless downstream. `probe`: a health check, answered once (it never
 * sends; an idempotent producer would turn `retries` 0 or 1 into endless retries).
 */
export function eventProducer(
  cfg: Config = config(),
  clientId = cfg.kafka.clientId,
  opts: { probe?: boolean; compression?: 'none' | 'gzip' } = {},
): EventProducer {
  const producer = new PlatformaticProducer({
    clientId,
    bootstrapBrokers: cfg.kafka.brokers,
    serializers: stringSerializers,
    idempotent: !opts.probe,
    acks: ProduceAcks.ALL,
    partitioner: compatibilityPartitioner,
    autocreateTopics: false,
    compression: opts.compression ?? 'none',
    connectTimeout: 3000,
    timeout: 30_000, // for the broker's acks, as kafkajs'
    retries: opts.probe ? 0 : 5,
    retryDelay: (_client, _op, attempt) => Math.min(100 * 2 ** (attempt - 1), 2000),
  });
  return {
    async partitions(topics) {
      const meta = await producer.metadata({ topics: [...topics], forceUpdate: true });
      return new Map([...meta.topics].map(([name, t]) => [name, t.partitionsCount]));
    },
    async send(records) {
      await producer.send({ messages: records });
    },
    close: () => producer.close(),
  };
}

export function s3Client(cfg: Config = config()): S3Client {
  // The SDK's notice about Node versions it will drop is not actionable per call (the project runs on Node 22, see README).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return new S3Client({
    endpoint: cfg.s3.endpoint,
    region: cfg.s3.region,
    forcePathStyle: cfg.s3.forcePathStyle,
    credentials: { accessKeyId: cfg.s3.accessKeyId, secretAccessKey: cfg.s3.secretAccessKey },
  });
}

/**
 * With REDIS_SENTINELS set, the client asks the Sentinels for the primary of REDIS_SENTINEL_NAME and
 * asks again on every reconnect: a promotion costs the time Sentinel takes to decide, not a restart.
 */
export function redisClient(cfg: Config = config(), opts: { lazy?: boolean; probe?: boolean; autoPipelining?: boolean } = {}): Redis {
  const sentinel =
    cfg.redis.sentinels.length > 0
      ? {
          sentinels: cfg.redis.sentinels.map((hp) => {
            const i = hp.lastIndexOf(':');
            return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
          }),
          name: cfg.redis.sentinelName,
          // Subscribes to the Sentinels' +switch-master: a demoted primary that stays up is left at once.
          failoverDetector: true,
          sentinelRetryStrategy: opts.probe ? () => null : (times: number) => Math.min(times * 200, 2000),
          // A primary demoted while connected answers READONLY: reconnect (to the new one) and resend.
          reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false) as 2 | false,
        }
      : {};
  const options = {
    ...sentinel,
    lazyConnect: opts.lazy ?? opts.probe ?? false,
    maxRetriesPerRequest: opts.probe ? 0 : 3,
    retryStrategy: opts.probe ? () => null : undefined,
    /*
     * Auto-pipelining batches concurrent commands (many small reads: the serving layer). ioredis 6
     * queues a command's callback before adding the command to the shared pipeline; when adding
     * throws (a command with too many arguments to spread), the pipeline's replies and callbacks no
     * longer line up: later callbacks get other commands' replies, and the extra one throws
     * "results[i] is not iterable" from a timer, an uncaught exception that ends the process.
     * Writers that send few, large commands (the speed layer) turn it off.
     */
    enableAutoPipelining: opts.autoPipelining ?? true,
  };
  const client = cfg.redis.sentinels.length > 0 ? new Redis(options) : new Redis(cfg.redis.url, options);
  if (opts.probe) client.on('error', () => {});
  else client.on('error', (err: Error) => logger('redis').warn({ err: err.message }, 'redis connection error'));
  return client;
}
