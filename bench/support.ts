/** Small helpers the benchmark scripts share. */
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { InvalidArgumentError } from 'commander';
import type { Config } from '../common/config';
import { findPid } from '../infra/proc';

export { findPid, freePort } from '../infra/proc';

/** `KEY=VALUE` pairs from a repeatable option, as an environment object. */
export function envPairs(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${kv}"`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

/** Pids of the shared stack's servers (null when not found), to read their CPU and RSS from /proc. Read-only. */
export function stackPids(cfg: Config): { kafka: number | null; redis: number | null; minio: number | null } {
  return {
    kafka: findPid('kafka.Kafka', 'server.properties'),
    redis: findPid('redis-server', `:${cfg.stack.redisPort}`),
    minio: findPid('minio', ' server ', `127.0.0.1:${cfg.stack.minioPort}`),
  };
}

export { groupLags } from '../common/topics';

/** Empty a bucket and remove it (a benchmark's own bucket, at the end of the run). Returns the objects removed. */
export async function removeBucket(s3: S3Client, bucket: string): Promise<number> {
  let removed = 0;
  for (;;) {
    // Always the first page: what was deleted is gone, so no continuation token is needed.
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (keys.length === 0) break;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
    removed += keys.length;
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
  return removed;
}

/** The settings that give a bench run (`bench.<id>`) its own topics, consumer groups, Redis key prefix and bucket. */
export function isolationEnv(id: string, partitions: number): Record<string, string> {
  return {
    TOPIC_RAW: `${id}.events.raw`,
    TOPIC_DLQ: `${id}.events.dlq`,
    TOPIC_RAW_PARTITIONS: String(partitions),
    SPEED_GROUP: `${id}.speed`,
    LAKE_GROUP: `${id}.lake`,
    REDIS_KEY_PREFIX: `${id.replace('.', ':')}:`,
    S3_BUCKET: id.replace('.', '-'),
  };
}
