/**
 * Proves each dependency of the platform for real, on the stack infra/ starts:
 * Kafka (kafkajs), MinIO (AWS SDK), Redis (ioredis), Temporal (worker + client)
 * and DuckDB (zstd Parquet written and read back).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { DuckDBInstance } from '@duckdb/node-api';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../common/config';
import { kafkaClient, redisClient, s3Client } from '../../common/clients';
import { status } from '../../infra/stack';
import { isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
import * as smokeActivities from './fixtures/smoke-activities';
import { smokeWorkflow } from './fixtures/smoke-workflow';

let cfg: Config;
beforeAll(async () => {
  cfg = await isolatedConfig('smoke');
});

describe('the native stack', () => {
  it('reports every service healthy', async () => {
    const rows = await status();
    expect(rows.map((r) => [r.name, r.healthy])).toEqual([
      ['kafka', true],
      ['redis', true],
      ['minio', true],
      ['temporal', true],
    ]);
  });

  it('serves the Temporal Web UI', async () => {
    const res = await fetch(`http://127.0.0.1:${cfg.stack.temporalUiPort}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/<html/i);
  });
});

describe('Kafka', () => {
  it('created events.raw with >= 6 partitions and 7-day retention', async () => {
    const admin = kafkaClient(cfg).admin();
    await admin.connect();
    try {
      const meta = await admin.fetchTopicMetadata({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] });
      const raw = meta.topics.find((t) => t.name === cfg.kafka.rawTopic)!;
      expect(raw.partitions.length).toBeGreaterThanOrEqual(6);
      const configs = await admin.describeConfigs({ resources: [{ type: 2, name: cfg.kafka.rawTopic, configNames: ['retention.ms'] }], includeSynonyms: false });
      expect(configs.resources[0].configEntries[0].configValue).toBe(String(7 * 24 * 3600 * 1000));
    } finally {
      await admin.disconnect();
    }
  });

  it('round-trips messages through events.raw with an idempotent producer', async () => {
    const kafka = kafkaClient(cfg);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 5 });
    const consumer = kafka.consumer({ groupId: `${cfg.kafka.speedGroup}-smoke` });
    await producer.connect();
    await consumer.connect();
    const ids = Array.from({ length: 50 }, (_, i) => `evt-${i}`);
    try {
      await producer.send({
        topic: cfg.kafka.rawTopic,
        acks: -1,
        messages: ids.map((id, i) => ({ key: `user-${i % 7}`, value: JSON.stringify({ event_id: id }) })),
      });
      await consumer.subscribe({ topic: cfg.kafka.rawTopic, fromBeginning: true });
      const seen = new Set<string>();
      const partitions = new Set<number>();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${seen.size} of 50 consumed`)), 30_000);
        void consumer.run({
          eachMessage: async ({ message, partition }) => {
            seen.add(JSON.parse(message.value!.toString()).event_id);
            partitions.add(partition);
            if (seen.size === ids.length) {
              clearTimeout(timer);
              resolve();
            }
          },
        });
      });
      expect([...seen].sort()).toEqual([...ids].sort());
      expect(partitions.size).toBeGreaterThan(1); // keyed by user: spread over partitions
    } finally {
      await consumer.disconnect();
      await producer.disconnect();
    }
  });
});

describe('MinIO (S3)', () => {
  it('puts, lists, gets and deletes an object', async () => {
    const s3 = s3Client(cfg);
    const key = `smoke/${randomUUID()}.txt`;
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: 'lake says hi' }));
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: cfg.s3.bucket, Prefix: 'smoke/' }));
    expect(listed.Contents?.map((o) => o.Key)).toContain(key);
    const got = await s3.send(new GetObjectCommand({ Bucket: cfg.s3.bucket, Key: key }));
    expect(await got.Body!.transformToString()).toBe('lake says hi');
    await s3.send(new DeleteObjectCommand({ Bucket: cfg.s3.bucket, Key: key }));
    const after = await s3.send(new ListObjectsV2Command({ Bucket: cfg.s3.bucket, Prefix: 'smoke/' }));
    expect(after.KeyCount ?? 0).toBe(0);
  });
});

describe('Redis', () => {
  it('writes and reads back in one pipeline', async () => {
    const redis = redisClient(cfg);
    const k = `${cfg.redis.keyPrefix}smoke`;
    try {
      const results = await redis
        .pipeline()
        .hincrby(`${k}:h`, 'plays', 3)
        .hincrby(`${k}:h`, 'plays', 4)
        .pfadd(`${k}:hll`, 'u1', 'u2', 'u2', 'u3')
        .hget(`${k}:h`, 'plays')
        .pfcount(`${k}:hll`)
        .del(`${k}:h`, `${k}:hll`)
        .exec();
      expect(results!.map(([err]) => err)).toEqual([null, null, null, null, null, null]);
      expect(results![3][1]).toBe('7');
      expect(results![4][1]).toBe(3);
    } finally {
      redis.disconnect();
    }
  });
});

describe('Temporal', () => {
  it('runs a workflow and its activity on the dev server', async () => {
    quietTemporalRuntime();
    const connection = await NativeConnection.connect({ address: cfg.temporal.address });
    const worker = await Worker.create({
      connection,
      namespace: cfg.temporal.namespace,
      taskQueue: cfg.temporal.taskQueue,
      workflowsPath: fileURLToPath(new URL('./fixtures/smoke-workflow.ts', import.meta.url)),
      activities: smokeActivities,
    });
    const client = new Client({ connection: await Connection.connect({ address: cfg.temporal.address }), namespace: cfg.temporal.namespace });
    try {
      const result = await worker.runUntil(
        client.workflow.execute(smokeWorkflow, { taskQueue: cfg.temporal.taskQueue, workflowId: `smoke-${randomUUID()}`, args: ['lake'] }),
      );
      expect(result).toBe(`workflow saw: hello lake from pid ${process.pid}`);
    } finally {
      await client.connection.close();
      await connection.close();
    }
  });
});

describe('DuckDB', () => {
  it('writes a zstd Parquet file and reads it back', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duck-'));
    const file = path.join(dir, 'events.parquet');
    const db = await DuckDBInstance.create(':memory:');
    const con = await db.connect();
    try {
      await con.run(
        `COPY (SELECT 'evt_' || i AS event_id, i * 1000 AS ts, CASE WHEN i % 2 = 0 THEN 'video_play' ELSE 'click' END AS event_type
               FROM range(1000) t(i)) TO '${file}' (FORMAT parquet, COMPRESSION zstd)`,
      );
      const reader = await con.runAndReadAll(`SELECT event_type, count(*)::INTEGER AS n FROM read_parquet('${file}') GROUP BY 1 ORDER BY 1`);
      expect(reader.getRowObjects()).toEqual([
        { event_type: 'click', n: 500 },
        { event_type: 'video_play', n: 500 },
      ]);
      const cols = (await con.runAndReadAll(`SELECT event_id, ts FROM read_parquet('${file}') ORDER BY ts LIMIT 3`)).getColumnsObjectJS();
      expect(cols.event_id).toEqual(['evt_0', 'evt_1', 'evt_2']);
      const meta = (await con.runAndReadAll(`SELECT DISTINCT compression FROM parquet_metadata('${file}')`)).getRowObjects();
      expect(meta).toEqual([{ compression: 'ZSTD' }]);
    } finally {
      con.closeSync();
      db.closeSync();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
