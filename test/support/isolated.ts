/**
 * Per-test isolation on the shared stack: every test gets its own topics, Redis
 * key prefix and bucket, so tests never see each other's (or the demo's) data.
 */
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../common/config';
import { kafkaClient, s3Client } from '../../common/clients';
import { ensureBucket, ensureTopics } from '../../common/topics';
import type { Redis } from 'ioredis';
import { deleteObjects, listObjects } from '../../common/lake-io';
import { speedKeys } from '../../common/speed-keys';

export async function isolatedConfig(label: string, overrides: Record<string, string> = {}): Promise<Config> {
  const id = `${label}-${randomBytes(3).toString('hex')}`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  const cfg = loadConfig({
    ...process.env,
    TOPIC_RAW: `t.${id}.events.raw`,
    TOPIC_DLQ: `t.${id}.events.dlq`,
    SPEED_GROUP: `t.${id}.speed`,
    LAKE_GROUP: `t.${id}.lake`,
    REDIS_KEY_PREFIX: `t:${id}:`,
    S3_BUCKET: `t-${id}`,
    TEMPORAL_TASK_QUEUE: `t-${id}`,
    ...overrides,
  });
  await ensureTopics(kafkaClient(cfg, `test-${id}`), cfg);
  await ensureBucket(s3Client(cfg), cfg.s3.bucket);
  return cfg;
}

/** Remove what a test wrote under its isolated bucket and Redis prefix (the counterpart of isolatedConfig). */
export async function dropIsolated(cfg: Config, redis: Redis): Promise<void> {
  const s3 = s3Client(cfg);
  const keys = (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key);
  if (keys.length > 0) await deleteObjects(s3, cfg.s3.bucket, keys);
  const rkeys = await redis.keys(speedKeys(cfg).glob());
  // In chunks: one DEL spreading a catch-up test's hundreds of thousands of keys would overflow the call stack.
  for (let i = 0; i < rkeys.length; i += 1000) await redis.del(...rkeys.slice(i, i + 1000));
}
