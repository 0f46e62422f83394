/** Topic and bucket provisioning shared by infra:up, the services and the tests. */
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Kafka } from 'kafkajs';
import type { Config } from './config';

/** Create `events.raw` and `events.dlq` if missing (idempotent). */
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
      await admin.createTopics({ topics: wanted.map((t) => ({ ...t, replicationFactor: 1 })), waitForLeaders: true });
    }
  } finally {
    await admin.disconnect();
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
