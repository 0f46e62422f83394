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
      if (!(err as { retriable?: boolean }).retriable || Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`topics ${topics.join(', ')} have no leader after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
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
