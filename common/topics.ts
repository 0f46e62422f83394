/** Topic and bucket provisioning shared by infra:up, the services and the tests. */
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Admin, Kafka } from 'kafkajs';
import type { Config } from './config';

/**
 * Create `events.raw` and `events.dlq` if missing (idempotent), with the configured replication
 * (1 on the single-node stack; 3 replicas and min.insync.replicas=2 on the HA stack, so with the
 * producers' acks=all an accepted event is on two brokers before the collector answers).
 */
export async function ensureTopics(kafka: Kafka, cfg: Config): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const wanted = [
      {
        topic: cfg.kafka.rawTopic,
        numPartitions: cfg.kafka.rawPartitions,
        configEntries: [{ name: 'retention.ms', value: String(cfg.kafka.retentionMs) }],
      },
      {
        topic: cfg.kafka.dlqTopic,
        numPartitions: 3,
        configEntries: [{ name: 'retention.ms', value: String(30 * 24 * 3600 * 1000) }],
      },
    ].filter((t) => !existing.has(t.topic));
    if (wanted.length > 0) {
      const minIsr = { name: 'min.insync.replicas', value: String(cfg.kafka.minInsyncReplicas) };
      await admin.createTopics({
        topics: wanted.map((t) => ({ ...t, replicationFactor: cfg.kafka.replicationFactor, configEntries: [...t.configEntries, minIsr] })),
        waitForLeaders: false,
      });
    }
    await waitForLeaders(admin, [cfg.kafka.rawTopic, cfg.kafka.dlqTopic]);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Until every partition of the topics has a leader that answers for it. kafkajs' own
 * wait gives up on UNKNOWN_TOPIC_OR_PARTITION and NOT_LEADER_FOR_PARTITION, which a
 * broker that has just started answers for a topic it created a moment ago: retried
 * here, for up to `timeoutMs`.
 */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: meta } = await admin.fetchTopicMetadata({ topics });
      if (meta.length === topics.length && meta.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) {
        // The metadata can name a leader before that broker serves the partition (NOT_LEADER_FOR_PARTITION on
        // ListOffsets): ready means its offsets can be read too.
        for (const t of topics) await admin.fetchTopicOffsets(t);
        return;
      }
    } catch (err) {
      if (!retriableKafkaError(err) || Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`topics ${topics.join(', ')} have no leader after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** True for a Kafka error the broker says is worth retrying (a coordinator still loading, a leader moving). */
export const retriableKafkaError = (err: unknown): boolean => (err as { retriable?: boolean } | null)?.retriable === true;

/**
 * Run a Kafka admin read, retrying the errors the broker calls retriable for up to `timeoutMs`.
 * A freshly started broker answers COORDINATOR_LOAD_IN_PROGRESS to offset reads while it loads
 * `__consumer_offsets`; that is a wait, not a failure.
 */
export async function retryRetriable<T>(read: () => Promise<T>, timeoutMs = 30_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await read();
    } catch (err) {
      if (!retriableKafkaError(err) || Date.now() + everyMs > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Lag of one group: per partition, end offset minus the committed offset (or the log start when none is committed or it was deleted). */
export function groupLag(ends: ReadonlyArray<{ partition: number; high: number; low: number }>, committed: ReadonlyMap<number, number>): { lag: number; committed: number } {
  let lag = 0;
  let sum = 0;
  for (const { partition, high, low } of ends) {
    const c = committed.get(partition) ?? -1;
    lag += Math.max(0, high - Math.max(c, low));
    sum += Math.max(0, c);
  }
  return { lag, committed: sum };
}

/**
 * Lag of each consumer group over its topics: per partition, the end offset minus the group's
 * committed offset (or the log start when it has none), as the serving layer's lag alerts count it.
 * Both consumers commit only what is done (applied in Redis, in an uploaded object), so this is
 * what is not done yet. Retriable broker errors are retried (see `retryRetriable`).
 */
export async function groupLags(
  admin: Pick<Admin, 'fetchTopicOffsets' | 'fetchOffsets'>,
  groups: ReadonlyArray<{ groupId: string; topics: string[] }>,
  timeoutMs = 30_000,
): Promise<number[]> {
  const topics = [...new Set(groups.flatMap((g) => g.topics))];
  const ends = new Map(
    await Promise.all(
      topics.map(async (t) => {
        const rows = await retryRetriable(() => admin.fetchTopicOffsets(t), timeoutMs);
        return [t, rows.map((p) => ({ partition: p.partition, high: Number(p.high), low: Number(p.low) }))] as const;
      }),
    ),
  );
  return Promise.all(
    groups.map(async ({ groupId, topics: own }) => {
      const committed = await retryRetriable(() => admin.fetchOffsets({ groupId, topics: own }), timeoutMs);
      let lag = 0;
      for (const t of own) {
        const offsets = new Map((committed.find((c) => c.topic === t)?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
        lag += groupLag(ends.get(t)!, offsets).lag;
      }
      return lag;
    }),
  );
}

export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    try {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    } catch (err) {
      const name = (err as { name?: string }).name;
      if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
    }
  }
}
