import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRecord, RejectedRecord, validateEvent, type DeadLetter, type EventRecord } from '../../common/contract';
import { DLQ_COLUMNS, RAW_EVENT_COLUMNS } from '../../common/lake';
import { writeDlqParquet, writeRawParquet } from '../../batch-layer/lake-writer/parquet';

const NOW = Date.UTC(2024, 4, 1, 12, 30);
let dir: string;
let db: DuckDBInstance;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lake-parquet-'));
  db = await DuckDBInstance.create(':memory:');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function record(ev: Record<string, unknown>): EventRecord {
  const v = validateEvent(ev, NOW);
  if (!v.ok) throw new Error(v.detail);
  return v.record;
}

async function query(sql: string): Promise<Record<string, unknown>[]> {
  const conn = await db.connect();
  try {
    return (await conn.runAndReadAll(sql)).getRowObjectsJson() as Record<string, unknown>[];
  } finally {
    conn.closeSync();
  }
}

describe('writeRawParquet', () => {
  const full = record({
    event_id: "evt_1 'quoted' \"double\"",
    event_type: 'video_play',
    user_id: 'user_ünïcödé_😀',
    session_id: 'sess_a',
    timestamp: NOW - 1000,
    schema_version: 1,
    experiment: { arm: 'B', ids: [1, 2] },
    properties: {
      content_id: 'movie_1',
      device_type: 'smart_tv',
      video_quality: '4k',
      playback_position: 12.5,
      duration_ms: 7_200_000,
      page: 'home',
      target: 'billboard',
      autoplay: true,
    },
    context: { location: 'us-CA-SF', user_agent: 'Netflix/1.0\nline2', ip_address: '10.0.0.1', app_version: '8.41.0', os: 'tvOS' },
  });
  const bare = record({ event_id: 'evt_2', event_type: 'click', user_id: 'user_2', timestamp: NOW - 2000 });

  it('writes exactly the contract columns with their types, zstd-compressed', async () => {
    const file = path.join(dir, 'schema.parquet');
    await writeRawParquet([{ record: full, partition: 3, offset: '42' }], file);
    const cols = await query(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('${file}'))`);
    expect(cols.map((c) => [c.column_name, c.column_type])).toEqual(Object.entries(RAW_EVENT_COLUMNS));
    const codecs = await query(`SELECT DISTINCT compression FROM parquet_metadata('${file}')`);
    expect(codecs.map((c) => c.compression)).toEqual(['ZSTD']);
  });

  it('round-trips every column, flattens properties/context and keeps unknown fields as JSON', async () => {
    const file = path.join(dir, 'roundtrip.parquet');
    await writeRawParquet(
      [
        { record: full, partition: 3, offset: '42' },
        { record: bare, partition: 0, offset: '9007199254740000' },
      ],
      file,
    );
    const rows = await query(`SELECT * FROM read_parquet('${file}') ORDER BY kafka_partition DESC`);
    expect(rows).toHaveLength(2);
    const [a, b] = rows;
    expect(a).toMatchObject({
      event_id: "evt_1 'quoted' \"double\"",
      event_type: 'video_play',
      user_id: 'user_ünïcödé_😀',
      session_id: 'sess_a',
      ts: String(NOW - 1000),
      schema_version: 1,
      device_type: 'smart_tv',
      country: 'US',
      app_version: '8.41.0',
      content_id: 'movie_1',
      video_quality: '4k',
      playback_position: 12.5,
      duration_ms: 7_200_000,
      page: 'home',
      target: 'billboard',
      location: 'us-CA-SF',
      user_agent: 'Netflix/1.0\nline2',
      ip_address: '10.0.0.1',
      received_at: String(NOW),
      kafka_partition: 3,
      kafka_offset: '42',
    });
    expect(JSON.parse(a.extra as string)).toEqual({
      experiment: { arm: 'B', ids: [1, 2] },
      properties: { autoplay: true },
      context: { os: 'tvOS' },
    });
    expect(b).toMatchObject({
      event_id: 'evt_2',
      session_id: null,
      device_type: 'unknown',
      country: 'unknown',
      app_version: 'unknown',
      content_id: null,
      video_quality: null,
      playback_position: null,
      duration_ms: null,
      page: null,
      target: null,
      location: null,
      user_agent: null,
      ip_address: null,
      kafka_partition: 0,
      kafka_offset: '9007199254740000',
      extra: null,
    });
  });

  it('keeps the order given and writes a valid file for many rows', async () => {
    const file = path.join(dir, 'many.parquet');
    const rows = Array.from({ length: 5000 }, (_, i) => ({
      record: { ...bare, event_id: `evt_${i}` },
      partition: 1,
      offset: String(i),
    }));
    await writeRawParquet(rows, file);
    const [stats] = await query(
      `SELECT count(*)::INT AS n, count(DISTINCT event_id)::INT AS ids, min(kafka_offset)::INT AS lo, max(kafka_offset)::INT AS hi FROM read_parquet('${file}')`,
    );
    expect(stats).toEqual({ n: 5000, ids: 5000, lo: 0, hi: 4999 });
    expect(fs.readdirSync(dir).filter((f) => f.includes('.ndjson') || f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('writeDlqParquet', () => {
  it('round-trips dead letters with the DLQ columns', async () => {
    const file = path.join(dir, 'dlq.parquet');
    const dead: DeadLetter[] = [
      { reason: 'malformed_json', detail: 'Unexpected token', received_at: NOW, raw: '{"event_id": ', index: 3 },
      { reason: 'schema_violation', detail: 'user_id is required', received_at: NOW + 1, raw: '{"event_id":"x"}' },
    ];
    await writeDlqParquet(
      dead.map((d, i) => ({ dead: d, topic: 'events.dlq', partition: 2, offset: String(10 + i) })),
      file,
    );
    const cols = await query(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('${file}'))`);
    expect(cols.map((c) => [c.column_name, c.column_type])).toEqual(Object.entries(DLQ_COLUMNS));
    const rows = await query(`SELECT * FROM read_parquet('${file}') ORDER BY kafka_offset`);
    expect(rows).toEqual([
      { reason: 'malformed_json', detail: 'Unexpected token', received_at: String(NOW), raw: '{"event_id": ', event_index: 3, kafka_topic: 'events.dlq', kafka_partition: 2, kafka_offset: '10' },
      { reason: 'schema_violation', detail: 'user_id is required', received_at: String(NOW + 1), raw: '{"event_id":"x"}', event_index: null, kafka_topic: 'events.dlq', kafka_partition: 2, kafka_offset: '11' },
    ]);
  });
});

describe('clock-skew columns', () => {
  it('lands device_ts and sent_at of a corrected event in the raw Parquet, NULL for the others', async () => {
    // The device's clock is 10 minutes behind: sent_at says so, ts is corrected, the device time is kept.
    const skewed = record({ event_id: 'evt_skew', event_type: 'click', user_id: 'u', timestamp: NOW - 600_000 - 2000, sent_at: NOW - 600_000 });
    const plain = record({ event_id: 'evt_plain', event_type: 'click', user_id: 'u', timestamp: NOW - 1000 });
    expect(skewed.ts).toBe(NOW - 2000);
    // Through the lake writer's own reading of the Kafka record, as in production.
    const back = decodeRecord(JSON.stringify(skewed));
    expect(back).toMatchObject({ device_ts: NOW - 600_000 - 2000, sent_at: NOW - 600_000 });
    const file = path.join(dir, 'skew.parquet');
    await writeRawParquet(
      [
        { record: back instanceof RejectedRecord ? skewed : back, partition: 0, offset: '1' },
        { record: plain, partition: 0, offset: '2' },
      ],
      file,
    );
    const rows = await query(`SELECT event_id, ts, device_ts, sent_at FROM read_parquet('${file}') ORDER BY event_id`);
    expect(rows).toEqual([
      { event_id: 'evt_plain', ts: String(NOW - 1000), device_ts: null, sent_at: null },
      { event_id: 'evt_skew', ts: String(NOW - 2000), device_ts: String(NOW - 600_000 - 2000), sent_at: String(NOW - 600_000) },
    ]);
  });
});

describe('schema evolution in the raw lake', () => {
  it('reads objects written before the version 2 columns beside new ones: the missing columns are NULL', async () => {
    const { Duck, parquetColumns, rawColumnsSelect, sqlList } = await import('../../batch-layer/jobs/duck');
    const v2 = record({ event_id: 'evt_v2', event_type: 'click', user_id: 'u', timestamp: NOW - 1000, schema_version: 2, app_id: 'tv-app', properties: { device: { type: 'smart_tv', os: 'tizen', model: 'QE55' } } });
    const v1 = record({ event_id: 'evt_v1', event_type: 'click', user_id: 'u', timestamp: NOW - 1000, properties: { device_type: 'smart_tv' } });
    const current = path.join(dir, 'current.parquet');
    await writeRawParquet([{ record: v2, partition: 0, offset: '1' }], current);
    // An object as the lake writer wrote it before version 2 existed: without the three columns.
    const scratch = path.join(dir, 'scratch.parquet');
    const old = path.join(dir, 'old.parquet');
    await writeRawParquet([{ record: v1, partition: 0, offset: '0' }], scratch);
    await query(`COPY (SELECT * EXCLUDE (app_id, device_os, device_model) FROM read_parquet('${scratch}')) TO '${old}' (FORMAT parquet)`);
    const duck = await Duck.open({ threads: 1 });
    try {
      const files = [old, current];
      const rows = await duck.json(
        `SELECT event_id, schema_version, device_type, app_id, device_os, device_model FROM (SELECT ${rawColumnsSelect(await parquetColumns(duck, files))} FROM read_parquet(${sqlList(files)}, union_by_name = true)) ORDER BY event_id`,
      );
      expect(rows).toEqual([
        { event_id: 'evt_v1', schema_version: 1, device_type: 'smart_tv', app_id: null, device_os: null, device_model: null },
        { event_id: 'evt_v2', schema_version: 2, device_type: 'smart_tv', app_id: 'tv-app', device_os: 'tizen', device_model: 'QE55' },
      ]);
    } finally {
      duck.close();
    }
  });
});
