/**
 * Synthetic raw days for the batch benches (bench/batch.ts and its backfill command): N events of a day
 * generated inside DuckDB (so a 10 M-event day never passes through JavaScript), users spread over devices
 * and countries, 1 % of the events sent twice (30 s later), landed as the lake writer lands them: one raw
 * object per hour × Kafka partition.
 */
import fs from 'node:fs';
import path from 'node:path';
import { s3Client } from '../common/clients';
import type { Config } from '../common/config';
import { EVENT_TYPES } from '../common/contract';
import { lakePaths } from '../common/lake';
import { deleteObjects, listObjects, uploadFile } from '../common/lake-io';
import { ensureBucket } from '../common/topics';
import { hoursOfDay } from '../batch-layer/jobs';
import { rawColumnsSelect, sqlString, type Duck } from '../batch-layer/jobs/duck';

export interface SyntheticDay {
  day: string;
  events: number;
  users: number;
  partitions: number;
  /** Offsets and event ids start here (default 0); a day uses 2 × events of them (its resent copies follow), so the next day starts there or later. */
  first?: number;
}

/** Fills table `gen` (replaced) with the day's raw rows, duplicates included; and, given a file, writes them to it. */
export async function generateDay(duck: Duck, d: SyntheticDay, file?: string): Promise<void> {
  const types = `[${EVENT_TYPES.map(sqlString).join(', ')}]`;
  const dayStart = Date.parse(`${d.day}T00:00:00Z`);
  const first = d.first ?? 0;
  await duck.run(`
    CREATE OR REPLACE TABLE gen AS
    SELECT
      'evt_' || i AS event_id,
      ${types}[1 + CAST(hash(i, 'type') % ${EVENT_TYPES.length} AS INTEGER)] AS event_type,
      'user_' || u AS user_id,
      'sess_' || u AS session_id,
      ${dayStart} + CAST(hash(i, 'ts') % 86400000 AS BIGINT) AS ts,
      1 AS schema_version,
      ['smart_tv', 'ios', 'android', 'web', 'unknown'][1 + CAST(u % 5 AS INTEGER)] AS device_type,
      ['US', 'BR', 'GB', 'IN', 'FR', 'unknown'][1 + CAST(u % 6 AS INTEGER)] AS country,
      ['8.41.0', '8.40.2', '8.39.1'][1 + CAST(u % 3 AS INTEGER)] AS app_version,
      'movie_' || CAST(hash(i, 'content') % 500 AS INTEGER) AS content_id,
      NULL AS video_quality, NULL AS playback_position, NULL AS duration_ms, NULL AS page, NULL AS target,
      NULL AS location, NULL AS user_agent, NULL AS ip_address,
      ${dayStart} + CAST(hash(i, 'ts') % 86400000 AS BIGINT) + 50 AS received_at,
      CAST(u % ${d.partitions} AS INTEGER) AS kafka_partition,
      i AS kafka_offset,
      NULL AS extra,
      NULL AS device_ts, NULL AS sent_at,
      'tv-app' AS app_id, NULL AS device_os, NULL AS device_model
    FROM (SELECT i, CAST(hash(i, 'user') % ${d.users} AS BIGINT) AS u FROM range(${first}, ${first + d.events}) t(i))`);
  await duck.run(`
    INSERT INTO gen
    SELECT * REPLACE (received_at + 30000 AS received_at, kafka_offset + ${d.events} AS kafka_offset)
    FROM gen WHERE hash(event_id, 'dup') % 100 = 0`);
  if (file) await duck.run(`COPY (SELECT ${rawColumnsSelect()} FROM gen ORDER BY kafka_partition, kafka_offset) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd)`);
}

/** Uploads table `gen` as raw objects, one per hour × partition (staged under `dir`); returns how many. */
export async function loadDay(duck: Duck, cfg: Config, dir: string, opts: { day: string; partitions: number; emptyBucket?: boolean }): Promise<number> {
  const s3 = s3Client(cfg);
  await ensureBucket(s3, cfg.s3.bucket);
  if (opts.emptyBucket) {
    const old = (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key);
    if (old.length > 0) await deleteObjects(s3, cfg.s3.bucket, old);
  }
  let objects = 0;
  for (const hour of hoursOfDay(opts.day)) {
    const h0 = Date.parse(`${hour}:00:00Z`);
    for (let p = 0; p < opts.partitions; p++) {
      const where = `ts >= ${h0} AND ts < ${h0 + 3_600_000} AND kafka_partition = ${p}`;
      const [range] = await duck.rows(`SELECT min(kafka_offset) AS lo, max(kafka_offset) AS hi FROM gen WHERE ${where}`);
      if (range.lo === null) continue;
      const file = path.join(dir, `${hour}-${p}.parquet`);
      await duck.run(`COPY (SELECT ${rawColumnsSelect()} FROM gen WHERE ${where} ORDER BY kafka_offset) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd)`);
      await uploadFile(s3, cfg.s3.bucket, lakePaths.rawObject(hour, p, String(range.lo), String(range.hi)), file);
      fs.rmSync(file);
      objects++;
    }
  }
  return objects;
}
