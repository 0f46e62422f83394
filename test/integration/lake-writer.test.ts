/**
 * The lake writer on the real stack: Kafka in, MinIO out. Events across hours
 * and partitions land in their event-time hour exactly once, offsets move only
 * after the upload, late data marks its hour and day dirty, dead letters are
 * archived.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Partitioners, type Admin, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type DeadLetter, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type DirtyMarker } from '../../common/lake';
import { getJson, listObjects, stageObjects, withScratchDir } from '../../common/lake-io';
import { startLakeWriter, type LakeWriterService as LakeWriter } from '../../batch-layer/lake-writer/service';
import { isolatedConfig } from '../support/isolated';

const T = (h: number, m = 0, d = 1) => Date.UTC(2024, 4, d, h, m);

let cfg: Config;
let producer: Producer;
let admin: Admin;
let writer: LakeWriter | undefined;
let clock = T(10, 30);
const produced: EventRecord[] = [];

beforeAll(async () => {
  cfg = await isolatedConfig('lakew', { LAKE_ROLL_AGE_SEC: '3600', LAKE_ROLL_BYTES: String(64 * 1024 * 1024), LAKE_WRITER_PORT: '0' });
  const kafka = kafkaClient(cfg, 'lake-writer-test');
  producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: true });
  admin = kafka.admin();
  await Promise.all([producer.connect(), admin.connect()]);
});

afterAll(async () => {
  await writer?.stop();
  await producer?.disconnect();
  await admin?.disconnect();
});

function event(i: number, ts: number, extra: Record<string, unknown> = {}): EventRecord {
  const v = validateEvent(
    {
      event_id: `evt_${i}`,
      event_type: i % 3 === 0 ? 'video_play' : 'page_view',
      user_id: `user_${i % 37}`,
      session_id: `sess_${i % 11}`,
      timestamp: ts,
      properties: { device_type: i % 2 ? 'smart_tv' : 'mobile', content_id: `movie_${i % 5}` },
      context: { location: 'US-CA-SF', app_version: '8.41.0' },
      ...extra,
    },
    Math.max(clock, ts),
  );
  if (!v.ok) throw new Error(v.detail);
  return { ...v.record, received_at: clock };
}

async function produce(records: EventRecord[]): Promise<void> {
  await producer.send({
    topic: cfg.kafka.rawTopic,
    acks: -1,
    messages: records.map((r) => ({ key: r.user_id, value: JSON.stringify(r) })),
  });
  produced.push(...records);
}

async function until(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Committed offsets per partition; a partition never committed reads as -1. */
async function committedOffsets(topic: string): Promise<Map<number, string>> {
  const [res] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [topic] });
  return new Map(res.partitions.map((p) => [p.partition, p.offset]));
}

/** True when every partition's committed offset is its end offset (an empty partition needs no commit). */
async function allCommitted(topic: string): Promise<boolean> {
  const committed = await committedOffsets(topic);
  const ends = await endOffsets(topic);
  return [...ends].every(([p, high]) => high === '0' || committed.get(p) === high);
}

async function endOffsets(topic: string): Promise<Map<number, string>> {
  return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.high]));
}

async function readLake<T>(prefix: string, sql: (glob: string) => string): Promise<T[]> {
  const s3 = s3Client(cfg);
  const keys = (await listObjects(s3, cfg.s3.bucket, prefix)).map((o) => o.key);
  if (keys.length === 0) return [];
  return withScratchDir(cfg, async (dir) => {
    await stageObjects(s3, cfg.s3.bucket, keys, dir);
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    try {
      return (await conn.runAndReadAll(sql(path.join(dir, prefix)))).getRowObjectsJson() as T[];
    } finally {
      conn.closeSync();
      db.closeSync();
    }
  });
}

describe('lake writer', () => {
  it('writes nothing and commits nothing until files roll, then uploads and commits', async () => {
    writer = await startLakeWriter(cfg, { now: () => clock });
    const batch = Array.from({ length: 300 }, (_, i) => event(i, T(10, i % 60)));
    await produce(batch);
    await until('the writer to consume hour 10', () => writer!.status().consumed >= 300);

    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawEventsPrefix)).toEqual([]);
    const before = await committedOffsets(cfg.kafka.rawTopic);
    // Every partition started at 0: nothing may be committed past it while the data sits in memory.
    expect([...before.values()].every((o) => o === '-1' || o === '0')).toBe(true);

    await writer.flush();
    const objects = await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawEventsPrefix);
    expect(objects.length).toBeGreaterThan(1); // several partitions
    expect(objects.every((o) => o.key.startsWith(lakePaths.rawHourPrefix('2024-05-01T10')))).toBe(true);
    expect(await allCommitted(cfg.kafka.rawTopic)).toBe(true);
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, '_manifests/dirty/')).toEqual([]);
  });

  it('puts late events in their own hour and marks that hour and day dirty', async () => {
    clock = T(11, 30);
    const onTime = Array.from({ length: 200 }, (_, i) => event(1000 + i, T(11, i % 30)));
    const lateSameDay = Array.from({ length: 20 }, (_, i) => event(2000 + i, T(10, 59)));
    const lateOldDay = [event(3000, Date.UTC(2024, 3, 28, 7, 5), { experiment: 'x' })];
    // Interleaved, so one partition holds open files for several hours at once.
    const mixed = onTime.flatMap((e, i) => [e, ...(i < lateSameDay.length ? [lateSameDay[i]] : []), ...(i === 50 ? lateOldDay : [])]);
    await produce(mixed);
    await until('the writer to consume the mix', () => writer!.status().consumed >= 300 + mixed.length);
    await writer!.flush();

    const s3 = s3Client(cfg);
    const dirty = (await listObjects(s3, cfg.s3.bucket, '_manifests/dirty/')).map((o) => o.key).sort();
    expect(dirty).toEqual(
      [
        lakePaths.dirtyMarker('daily', '2024-04-28'),
        lakePaths.dirtyMarker('daily', '2024-05-01'),
        lakePaths.dirtyMarker('hourly', '2024-04-28T07'),
        lakePaths.dirtyMarker('hourly', '2024-05-01T10'),
      ].sort(),
    );
    const marker = await getJson<DirtyMarker>(s3, cfg.s3.bucket, lakePaths.dirtyMarker('hourly', '2024-05-01T10'));
    expect(marker).toMatchObject({ kind: 'hourly', period: '2024-05-01T10', markedAt: T(11, 30) });
    expect(marker!.reason).toMatch(/late data/);
    expect(await allCommitted(cfg.kafka.rawTopic)).toBe(true);
  });

  it('holds every produced event exactly once, in the prefix of its event-time hour and in an object named by its offsets', async () => {
    const rows = await readLake<{ event_id: string; ts: string; dt: string; hour: string; file: string; kafka_partition: number; kafka_offset: string; extra: string | null }>(
      lakePaths.rawEventsPrefix,
      (glob) =>
        `SELECT event_id, ts, dt::VARCHAR AS dt, hour::VARCHAR AS hour, filename AS file, kafka_partition, kafka_offset, extra
           FROM read_parquet('${glob}/*/*/*.parquet', hive_partitioning = true, filename = true)`,
    );
    expect(rows).toHaveLength(produced.length);
    expect(new Set(rows.map((r) => r.event_id)).size).toBe(produced.length);
    const byId = new Map(produced.map((e) => [e.event_id, e]));
    for (const r of rows) {
      const e = byId.get(r.event_id)!;
      expect(Number(r.ts)).toBe(e.ts);
      const hour = hourId(e.ts);
      expect(`${r.dt}T${r.hour.padStart(2, '0')}`).toBe(hour);
      const m = /p(\d+)-(\d+)-(\d+)\.parquet$/.exec(r.file)!;
      expect(Number(m[1])).toBe(r.kafka_partition);
      expect(BigInt(r.kafka_offset) >= BigInt(m[2]) && BigInt(r.kafka_offset) <= BigInt(m[3])).toBe(true);
    }
    expect(rows.find((r) => r.event_id === 'evt_3000')!.extra).toBe('{"experiment":"x"}');
  });

  it('archives dead letters (and unreadable raw records) under raw/dlq/', async () => {
    const dead: DeadLetter[] = [
      { reason: 'malformed_json', detail: 'Unexpected end of JSON input', received_at: T(11, 31), raw: '{"event_id":', index: 0 },
      { reason: 'schema_violation', detail: 'user_id is required', received_at: T(11, 32), raw: '{"event_id":"e"}' },
    ];
    const target = writer!.status().consumed + 3;
    await producer.send({ topic: cfg.kafka.dlqTopic, acks: -1, messages: dead.map((d) => ({ key: d.reason, value: JSON.stringify(d) })) });
    await producer.send({ topic: cfg.kafka.rawTopic, acks: -1, messages: [{ key: 'x', value: 'this is not an event', timestamp: String(T(11, 33)) }] });
    await until('the writer to consume dead letters', () => writer!.status().consumed >= target);
    await writer!.flush();

    const rows = await readLake<{ reason: string; raw: string; event_index: number | null; kafka_topic: string; dt: string }>(
      lakePaths.rawDlqPrefix,
      (glob) => `SELECT reason, raw, event_index, kafka_topic, dt::VARCHAR AS dt FROM read_parquet('${glob}/*/*.parquet', hive_partitioning = true) ORDER BY raw`,
    );
    expect(rows).toEqual([
      { reason: 'malformed_json', raw: '{"event_id":', event_index: 0, kafka_topic: cfg.kafka.dlqTopic, dt: '2024-05-01' },
      { reason: 'schema_violation', raw: '{"event_id":"e"}', event_index: null, kafka_topic: cfg.kafka.dlqTopic, dt: '2024-05-01' },
      { reason: 'malformed_json', raw: 'this is not an event', event_index: null, kafka_topic: cfg.kafka.rawTopic, dt: '2024-05-01' },
    ].sort((a, b) => (a.raw < b.raw ? -1 : 1)));
    expect(await allCommitted(cfg.kafka.dlqTopic)).toBe(true);
    expect(await allCommitted(cfg.kafka.rawTopic)).toBe(true);
  });

  it('serves /health and Prometheus /metrics', async () => {
    const health = await (await fetch(`http://127.0.0.1:${writer!.port}/health`)).json();
    expect(health).toMatchObject({ status: 'ok', buffered: 0, uploading: 0 });
    const text = await (await fetch(`http://127.0.0.1:${writer!.port}/metrics`)).text();
    expect(text).toMatch(/lake_writer_objects_total\{stream="raw"\} \d+/);
    expect(text).toMatch(/lake_writer_late_records_total 21/);
  });

  it('flushes on stop', async () => {
    clock = T(12, 10);
    const target = writer!.status().consumed + 1;
    await produce([event(4000, T(12, 1))]);
    await until('the last event', () => writer!.status().consumed >= target);
    await writer!.stop();
    writer = undefined;
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawHourPrefix('2024-05-01T12'))).map((o) => o.key);
    expect(keys).toHaveLength(1);
    expect(await allCommitted(cfg.kafka.rawTopic)).toBe(true);
    await fs.access(cfg.batch.scratchDir);
  });
});
