/** Small helpers the benchmark scripts share. */
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { InvalidArgumentError } from 'commander';
import type { Admin } from 'kafkajs';
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

/**
 * Lag of each consumer group over its topics: per partition, the end offset minus the group's
 * committed offset (or the log start when it has none), as the serving layer's lag alerts count it.
 * Both consumers commit only what is done (applied in Redis, in an uploaded object), so this is
 * what is not done yet.
 */
export async function groupLags(admin: Admin, groups: ReadonlyArray<{ groupId: string; topics: string[] }>): Promise<number[]> {
  const topics = [...new Set(groups.flatMap((g) => g.topics))];
  const ends = new Map(
    await Promise.all(topics.map(async (t) => [t, (await admin.fetchTopicOffsets(t)).map((p) => ({ partition: p.partition, high: Number(p.high), low: Number(p.low) }))] as const)),
  );
  return Promise.all(
    groups.map(async ({ groupId, topics: own }) => {
      const committed = await admin.fetchOffsets({ groupId, topics: own });
      let lag = 0;
      for (const t of own) {
        const offsets = new Map((committed.find((c) => c.topic === t)?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
        for (const { partition, high, low } of ends.get(t)!) lag += Math.max(0, high - Math.max(offsets.get(partition) ?? -1, low));
      }
      return lag;
    }),
  );
}

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
