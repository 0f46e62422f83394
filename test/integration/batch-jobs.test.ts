/**
 * The batch layer end to end on real MinIO: a simulated 3-day dataset with
 * duplicates, late and invalid sends goes into the raw lake (as the lake writer
 * would write it: Parquet objects keyed by Kafka offsets, late data in a second
 * wave with dirty markers), hourly ×72 and daily ×3 run, and every published
 * table must equal an independent computation written below as plain SQL over
 * the simulator's NDJSON — validation, derived dimensions and de-duplication
 * included. Then: re-runs change no byte, N=1 and N=4 shards agree, compaction
 * (even interrupted) changes nothing, and bad input fails clearly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { EVENT_TYPES, MAX_FUTURE_SKEW_MS, MIN_TIMESTAMP_MS, validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type DirtyMarker, type RunManifest, type Watermark } from '../../common/lake';
import { logger } from '../../common/log';
import { copyObject, deleteObjects, getJson, listObjects, putJson, stageObjects } from '../../batch-layer/lake-io';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import {
  CorruptObjectError,
  MissingHoursError,
  NonRetryableBatchError,
  compactHour,
  computeWatermark,
  hoursOfDay,
  listDirty,
  runDaily,
  runHourly,
  type JobContext,
} from '../../batch-layer/jobs';
import { Duck, sqlList, sqlString } from '../../batch-layer/jobs/duck';
import { writeNdjson, type SimulatedSend } from '../../ingestion/simulator/generate';
import { isolatedConfig } from '../support/isolated';

const DAYS = ['2025-01-10', '2025-01-11', '2025-01-12'];
const START = Date.parse(`${DAYS[0]}T00:00:00Z`);
const END = Date.parse('2025-01-13T00:00:00Z');
/** The stand-in collector's clock for the "not more than 5 minutes in the future" rule. */
const CLOCK = END + 86_400_000;
const PARTITIONS = 3;
const HOURS = DAYS.flatMap(hoursOfDay);

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let ndjson: string;
let duck: Duck;
const sends: SimulatedSend[] = [];

function partitionOf(userId: string): number {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) | 0;
  return Math.abs(h) % PARTITIONS;
}

/** What the collector + lake writer would put in the lake: valid records with their Kafka position. */
function rawRows(): { row: RawRow; sendAt: number }[] {
  const offsets = new Array<number>(PARTITIONS).fill(0);
  const out: { row: RawRow; sendAt: number }[] = [];
  for (const send of sends) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(send.line);
    } catch {
      continue;
    }
    const result = validateEvent(parsed, CLOCK);
    if (!result.ok) continue;
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = partitionOf(record.user_id);
    out.push({ row: { record, partition, offset: String(offsets[partition]++) }, sendAt: send.sendAt });
  }
  return out;
}

/** One object per (hour, partition) of a wave, keyed by its offsets like the lake writer's. */
async function writeWave(rows: RawRow[]): Promise<string[]> {
  const groups = new Map<string, RawRow[]>();
  for (const r of rows) {
    const k = `${hourId(r.record.ts)}|${r.partition}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const s3 = s3Client(cfg);
  const hours = new Set<string>();
  let i = 0;
  for (const [k, group] of groups) {
    const [hour, p] = k.split('|');
    const key = lakePaths.rawObject(hour, Number(p), group[0].offset, group[group.length - 1].offset);
    const file = path.join(tmp, 'raw', `${i++}.parquet`);
    await writeRawParquet(group, file);
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: fs.readFileSync(file) }));
    hours.add(hour);
  }
  return [...hours].sort();
}

async function outputEtags(): Promise<Map<string, string>> {
  const s3 = s3Client(cfg);
  const objects = [
    ...(await listObjects(s3, cfg.s3.bucket, 'processed/')),
    ...(await listObjects(s3, cfg.s3.bucket, 'aggregated/')),
  ];
  return new Map(objects.map((o) => [o.key, o.etag]));
}

/** Downloads a published table for the given periods and exposes it as a DuckDB view `actual_<table>`. */
async function loadActual(zone: 'processed' | 'aggregated', table: string, periods: string[]): Promise<string> {
  const keys = periods.map((p) => lakePaths.table(zone, table, p));
  const files = await stageObjects(s3Client(cfg), cfg.s3.bucket, keys, path.join(tmp, 'actual'));
  const view = `actual_${zone}_${table}`;
  await duck.run(`CREATE OR REPLACE VIEW ${view} AS SELECT * FROM read_parquet(${sqlList(files)}, hive_partitioning = false)`);
  return view;
}

/** Rows in one and not the other (multiset), both ways, over the expected columns. */
async function diff(actualView: string, expectedSql: string): Promise<{ missing: unknown[]; unexpected: unknown[]; actualRows: number }> {
  await duck.run(`CREATE OR REPLACE TEMP TABLE expected AS ${expectedSql}`);
  const cols = (await duck.rows(`DESCRIBE expected`)).map((r) => `"${r.column_name as string}"`).join(', ');
  const unexpected = await duck.json(`SELECT ${cols} FROM ${actualView} EXCEPT ALL SELECT ${cols} FROM expected LIMIT 5`);
  const missing = await duck.json(`SELECT ${cols} FROM expected EXCEPT ALL SELECT ${cols} FROM ${actualView} LIMIT 5`);
  const actualRows = await duck.scalar(`SELECT count(*) FROM ${actualView}`);
  return { missing, unexpected, actualRows };
}

async function expectEqual(zone: 'processed' | 'aggregated', table: string, periods: string[], expectedSql: string): Promise<void> {
  const view = await loadActual(zone, table, periods);
  const d = await diff(view, expectedSql);
  expect({ table, missing: d.missing, unexpected: d.unexpected }).toEqual({ table, missing: [], unexpected: [] });
  expect(d.actualRows).toBeGreaterThan(0);
}

beforeAll(async () => {
  cfg = await isolatedConfig('batch', { BATCH_SHARDS: '4' });
  ctx = { cfg, log: logger('batch-test') };
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'batch-it-'));
  ndjson = path.join(tmp, 'sends.ndjson');
  await writeNdjson(
    ndjson,
    { seed: 42, users: 40, startMs: START, endMs: END, lateFraction: 0.03, duplicateFraction: 0.05, invalidFraction: 0.03 },
    (s) => sends.push(s),
  );
  duck = await Duck.open({ threads: 2 });
  await defineExpected();
}, 120_000);

afterAll(async () => {
  duck?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});


/**
 * The contract again, in SQL, straight from the NDJSON the simulator wrote:
 * which lines are valid events (METRICS.md §1), their derived dimensions,
 * and de-duplication by event_id in send order (§2).
 */
async function defineExpected(): Promise<void> {
  const str = (p: string) => `coalesce(json_type(j, '${p}'), 'VARCHAR') = 'VARCHAR'`;
  const num = (p: string) => `coalesce(json_type(j, '${p}'), 'DOUBLE') IN ('DOUBLE', 'BIGINT', 'UBIGINT')`;
  const nonEmpty = (p: string) => `CASE WHEN json_type(j, '${p}') = 'VARCHAR' AND json_extract_string(j, '${p}') <> '' THEN json_extract_string(j, '${p}') END`;
  await duck.run(`
    CREATE TABLE lines AS
    SELECT line, ordinality AS line_no
    FROM read_csv(${sqlString(ndjson)}, columns = {'line': 'VARCHAR'}, header = false, delim = '\x01', quote = '', escape = '', auto_detect = false)
    WITH ORDINALITY`);
  await duck.run(`
    CREATE TABLE exp_events AS
    WITH parsed AS (
      -- DuckDB's JSON reader tolerates a trailing comma; JSON (and the collector) do not.
      SELECT line_no, CAST(line AS JSON) AS j FROM lines
      WHERE json_valid(line) AND NOT regexp_matches(line, ',\\s*[}\\]]')
    ),
    valid AS (
      SELECT * FROM parsed
      WHERE json_type(j) = 'OBJECT'
        AND (json_type(j, '$.schema_version') IS NULL OR (json_type(j, '$.schema_version') IN ('BIGINT', 'UBIGINT') AND json_extract_string(j, '$.schema_version') = '1'))
        AND json_type(j, '$.event_id') = 'VARCHAR' AND length(json_extract_string(j, '$.event_id')) BETWEEN 1 AND 128
        AND json_type(j, '$.event_type') = 'VARCHAR' AND json_extract_string(j, '$.event_type') IN (${EVENT_TYPES.map(sqlString).join(', ')})
        AND json_type(j, '$.user_id') = 'VARCHAR' AND length(json_extract_string(j, '$.user_id')) BETWEEN 1 AND 128
        AND json_type(j, '$.timestamp') IN ('BIGINT', 'UBIGINT')
        AND coalesce(json_type(j, '$.session_id'), 'NULL') IN ('VARCHAR', 'NULL') AND coalesce(length(json_extract_string(j, '$.session_id')), 0) <= 128
        AND coalesce(json_type(j, '$.properties'), 'NULL') IN ('OBJECT', 'NULL')
        AND coalesce(json_type(j, '$.context'), 'NULL') IN ('OBJECT', 'NULL')
        AND ${['content_id', 'device_type', 'video_quality', 'page', 'target'].map((k) => str(`$.properties.${k}`)).join(' AND ')}
        AND ${num('$.properties.playback_position')} AND ${num('$.properties.duration_ms')}
        AND ${['location', 'user_agent', 'ip_address', 'app_version'].map((k) => str(`$.context.${k}`)).join(' AND ')}
        AND CAST(json_extract_string(j, '$.timestamp') AS BIGINT) BETWEEN ${MIN_TIMESTAMP_MS} AND ${CLOCK + MAX_FUTURE_SKEW_MS}
    ),
    derived AS (
      SELECT
        line_no,
        json_extract_string(j, '$.event_id') AS event_id,
        json_extract_string(j, '$.event_type') AS event_type,
        json_extract_string(j, '$.user_id') AS user_id,
        CAST(json_extract_string(j, '$.timestamp') AS BIGINT) AS ts,
        coalesce(${nonEmpty('$.properties.device_type')}, 'unknown') AS device_type,
        CASE WHEN regexp_full_match(split_part(json_extract_string(j, '$.context.location'), '-', 1), '[A-Za-z]{2}')
             THEN upper(split_part(json_extract_string(j, '$.context.location'), '-', 1)) ELSE 'unknown' END AS country,
        coalesce(${nonEmpty('$.context.app_version')}, 'unknown') AS app_version,
        ${nonEmpty('$.properties.content_id')} AS content_id
      FROM valid
    )
    SELECT d.* EXCLUDE (line_no), CAST(to_timestamp(ts / 1000) AS DATE) AS day, strftime(to_timestamp(ts // 3600000 * 3600), '%Y-%m-%dT%H') AS hour
    FROM derived d
    JOIN (SELECT event_id, min(line_no) AS first_line FROM derived GROUP BY event_id) f ON d.event_id = f.event_id AND d.line_no = f.first_line`);
  // Sessions, written from the definition: a session starts where no event of the same user and
  // day lies within the 30 minutes before it.
  await duck.run(`
    CREATE TABLE exp_sessions AS
    WITH starts AS (
      SELECT e.*, (
        SELECT count(*) FROM exp_events p
        WHERE p.user_id = e.user_id AND p.day = e.day AND (p.ts < e.ts OR (p.ts = e.ts AND p.event_id < e.event_id)) AND p.ts >= e.ts - 1800000
      ) = 0 AS is_start
      FROM exp_events e
    ),
    tagged AS (
      SELECT *, count(*) FILTER (WHERE is_start) OVER (PARTITION BY user_id, day ORDER BY ts, event_id) AS session_idx FROM starts
    ),
    seq AS (
      SELECT *, row_number() OVER (PARTITION BY user_id, day, session_idx ORDER BY ts, event_id) AS k FROM tagged
    ),
    firsts AS (
      SELECT user_id, day, session_idx, min(k) FILTER (WHERE event_type = 'video_play') AS play_k FROM seq GROUP BY ALL
    )
    SELECT
      s.user_id, s.day, s.session_idx,
      min(ts) AS start_ts, max(ts) AS end_ts, max(ts) - min(ts) AS duration_ms, count(*) AS events,
      max(device_type) FILTER (WHERE k = 1) AS device_type,
      max(app_version) FILTER (WHERE k = 1) AS app_version,
      max(country) FILTER (WHERE k = 1) AS country,
      f.play_k IS NOT NULL AS has_play,
      CASE WHEN f.play_k IS NOT NULL THEN count(*) FILTER (WHERE k < f.play_k AND event_type IN ('page_view', 'click', 'search')) END AS clicks_to_play,
      CASE WHEN f.play_k IS NULL THEN NULL
           WHEN f.play_k = 1 THEN '(direct)'
           ELSE array_to_string(list(event_type ORDER BY k) FILTER (WHERE k < f.play_k AND k >= f.play_k - 5), '>') END AS path
    FROM seq s JOIN firsts f USING (user_id, day, session_idx)
    GROUP BY s.user_id, s.day, s.session_idx, f.play_k`);
}

describe('batch jobs over a simulated lake', () => {
  it('publish every hour and day, and recompute exactly what late data touched', async () => {
    for (const kind of ['valid', 'late', 'duplicate', 'invalid'] as const) expect(sends.filter((x) => x.kind === kind).length, kind).toBeGreaterThan(0);
    const rows = rawRows();
    // Wave 1: everything the lake had when the schedules ran; wave 2: what arrived after (late sends).
    const cut = END + 3_600_000;
    const wave1 = rows.filter((r) => r.sendAt < cut).map((r) => r.row);
    const wave2 = rows.filter((r) => r.sendAt >= cut).map((r) => r.row);
    expect(wave2.length).toBeGreaterThan(0);
    await writeWave(wave1);
    const now = END + 2 * 86_400_000;
    for (const hour of HOURS) await runHourly(ctx, hour, { now });
    for (const day of DAYS) await runDaily(ctx, day, { shards: 4, now });
    let wm = await getJson<Watermark>(s3Client(cfg), cfg.s3.bucket, lakePaths.watermark);
    expect(wm).toMatchObject({ hourlyEnd: END, dailyEnd: END });

    // The late wave lands in its event-time hours and marks them (and their days) dirty, as the lake writer does.
    const lateHours = await writeWave(wave2);
    const markedAt = Date.now();
    for (const hour of lateHours) {
      for (const [kind, period] of [['hourly', hour], ['daily', hour.slice(0, 10)]] as const) {
        const marker: DirtyMarker = { kind, period, markedAt, reason: 'late data' };
        await putJson(s3Client(cfg), cfg.s3.bucket, lakePaths.dirtyMarker(kind, period), marker);
      }
    }
    wm = await computeWatermark(ctx);
    expect(wm.hourlyEnd).toBe(Date.parse(`${lateHours[0]}:00:00Z`));
    await expect(runDaily(ctx, lateHours[0].slice(0, 10), { now })).rejects.toBeInstanceOf(MissingHoursError);

    const dirty = await listDirty(ctx);
    expect(dirty.filter((d) => d.kind === 'hourly').map((d) => d.period)).toEqual(lateHours);
    for (const d of dirty.filter((m) => m.kind === 'hourly')) await runHourly(ctx, d.period, { now });
    for (const d of dirty.filter((m) => m.kind === 'daily')) await runDaily(ctx, d.period, { now });
    expect(await listDirty(ctx)).toEqual([]);
    wm = await getJson<Watermark>(s3Client(cfg), cfg.s3.bucket, lakePaths.watermark);
    expect(wm).toMatchObject({ hourlyEnd: END, dailyEnd: END });

    const manifest = (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('daily', DAYS[1])))!;
    expect(manifest.checks.every((c) => c.ok)).toBe(true);
    expect(manifest.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['every_hour_present', 'session_events_sum_to_processed']));
    const hourlyManifests = await Promise.all(HOURS.map((h) => getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('hourly', h))));
    const dups = hourlyManifests.reduce((n, m) => n + m!.duplicates!.natural, 0);
    expect(dups).toBe(sends.filter((s) => s.kind === 'duplicate').length);
    expect(hourlyManifests.reduce((n, m) => n + m!.duplicates!.synthetic, 0)).toBe(0);
  });

  it('processed/events and the hourly views equal the SQL over the NDJSON', async () => {
    await expectEqual('processed', 'events', HOURS, `SELECT event_id, event_type, user_id, ts, device_type, country, app_version, content_id FROM exp_events`);
    await expectEqual(
      'aggregated',
      'hourly_events',
      HOURS,
      // Each event counts once in every combination of its own value or 'ALL' per dimension.
      `SELECT e.hour AS hour_id, CAST(epoch_ms(strptime(e.hour, '%Y-%m-%dT%H')) AS BIGINT) AS hour_start_ms,
              et.v AS event_type, dt.v AS device_type, c.v AS country, av.v AS app_version, count(*) AS events
       FROM exp_events e,
            LATERAL (VALUES (e.event_type), ('ALL')) et(v), LATERAL (VALUES (e.device_type), ('ALL')) dt(v),
            LATERAL (VALUES (e.country), ('ALL')) c(v), LATERAL (VALUES (e.app_version), ('ALL')) av(v)
       GROUP BY ALL
       UNION ALL
       -- hours without any event publish one all-ALL row of zero
       SELECT hh, CAST(epoch_ms(strptime(hh, '%Y-%m-%dT%H')) AS BIGINT), 'ALL', 'ALL', 'ALL', 'ALL', 0
       FROM (SELECT unnest(${sqlList(HOURS)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,
    );
    await expectEqual(
      'aggregated',
      'hourly_users',
      HOURS,
      `SELECT hour AS hour_id, 'ALL' AS device_type, count(DISTINCT user_id) AS users FROM exp_events GROUP BY hour
       UNION ALL SELECT hour, device_type, count(DISTINCT user_id) FROM exp_events GROUP BY hour, device_type
       UNION ALL SELECT hh, 'ALL', 0 FROM (SELECT unnest(${sqlList(HOURS)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,
    );
    const playback = (key: string) => `SELECT hour AS hour_id, ${key} AS content_id,
         count(*) FILTER (WHERE event_type = 'video_play') AS plays, count(*) FILTER (WHERE event_type = 'video_pause') AS pauses,
         count(*) FILTER (WHERE event_type = 'video_complete') AS completes, count(*) FILTER (WHERE event_type = 'rebuffer') AS rebuffers,
         CASE WHEN count(*) FILTER (WHERE event_type = 'video_play') > 0 THEN count(*) FILTER (WHERE event_type = 'video_pause') / count(*) FILTER (WHERE event_type = 'video_play') END AS pause_rate,
         CASE WHEN count(*) FILTER (WHERE event_type = 'video_play') > 0 THEN count(*) FILTER (WHERE event_type = 'video_complete') / count(*) FILTER (WHERE event_type = 'video_play') END AS completion_rate
       FROM exp_events`;
    await expectEqual(
      'aggregated',
      'hourly_playback',
      HOURS,
      `${playback("'ALL'")} GROUP BY hour UNION ALL ${playback('content_id')} GROUP BY hour, content_id
       UNION ALL SELECT hh, 'ALL', 0, 0, 0, 0, NULL, NULL FROM (SELECT unnest(${sqlList(HOURS)}) AS hh) WHERE hh NOT IN (SELECT hour FROM exp_events)`,
    );
  });

  it('sessions, activity, session metrics, clicks to play and top paths equal the SQL over the NDJSON', async () => {
    await expectEqual('processed', 'sessions', DAYS, 'SELECT * FROM exp_sessions');
    await expectEqual(
      'processed',
      'user_daily_activity',
      DAYS,
      `SELECT e.user_id, e.day, count(*) AS events,
         (SELECT count(*) FROM exp_sessions s WHERE s.user_id = e.user_id AND s.day = e.day) AS sessions,
         count(*) FILTER (WHERE event_type = 'video_play') AS plays, count(*) FILTER (WHERE event_type = 'video_complete') AS completes,
         min(ts) AS first_event_ts, max(ts) AS last_event_ts,
         (SELECT min(day) FROM exp_events f WHERE f.user_id = e.user_id) AS first_seen_day
       FROM exp_events e GROUP BY e.user_id, e.day`,
    );
    await expectEqual(
      'aggregated',
      'daily_sessions',
      DAYS,
      `SELECT day, device_type, count(*) AS sessions, avg(duration_ms) AS avg_duration_ms, quantile_cont(duration_ms, 0.5) AS median_duration_ms,
              sum(CASE WHEN events = 1 THEN 1 ELSE 0 END) / count(*) AS bounce_rate, avg(events) AS avg_events_per_session
       FROM (SELECT day, device_type, duration_ms, events FROM exp_sessions UNION ALL SELECT day, 'ALL', duration_ms, events FROM exp_sessions)
       GROUP BY day, device_type`,
    );
    await expectEqual(
      'aggregated',
      'clicks_to_play',
      DAYS,
      `SELECT day, count(*) FILTER (WHERE has_play) AS play_sessions, count(*) FILTER (WHERE NOT has_play) AS no_play_sessions,
              avg(clicks_to_play) AS avg_clicks_to_play,
              ${Array.from({ length: 10 }, (_, i) => `count(*) FILTER (WHERE clicks_to_play = ${i}) AS clicks_${i}`).join(', ')},
              count(*) FILTER (WHERE clicks_to_play >= 10) AS clicks_10_plus
       FROM exp_sessions GROUP BY day`,
    );
    await expectEqual(
      'aggregated',
      'top_paths',
      DAYS,
      `SELECT day, rank, path, sessions FROM (
         SELECT day, path, count(*) AS sessions, rank() OVER (PARTITION BY day ORDER BY count(*) DESC, path) AS rank
         FROM exp_sessions WHERE has_play GROUP BY day, path) WHERE rank <= 20`,
    );
  });

  it('binge users, retention cohorts and the one big table equal the SQL over the NDJSON', async () => {
    await expectEqual(
      'aggregated',
      'binge_users',
      DAYS,
      `SELECT c3.day, c3.user_id, min(c3.ts) AS first_binge_ts
       FROM exp_events c3
       WHERE c3.event_type = 'video_complete' AND (
         SELECT count(*) FROM exp_events c
         WHERE c.user_id = c3.user_id AND c.event_type = 'video_complete'
           AND (c.ts < c3.ts OR (c.ts = c3.ts AND c.event_id <= c3.event_id)) AND c.ts >= c3.ts - 14400000) >= 3
       GROUP BY c3.day, c3.user_id`,
    );
    const [{ n: binge }] = await duck.json(`SELECT count(*) AS n FROM actual_aggregated_binge_users`);
    expect(Number(binge)).toBeGreaterThan(0);
    await expectEqual(
      'aggregated',
      'retention_cohorts',
      DAYS,
      `WITH activity AS (SELECT DISTINCT user_id, day FROM exp_events),
       as_of_days AS (SELECT DISTINCT day AS a FROM exp_events),
       firsts AS (SELECT a, user_id, min(day) AS c, max(day) AS last_day FROM as_of_days JOIN activity ON day <= a GROUP BY a, user_id),
       flags AS (
         SELECT f.*, ${[1, 7, 14, 28].map((k) => `EXISTS (SELECT 1 FROM activity x WHERE x.user_id = f.user_id AND x.day = f.c + ${k}) AS r${k}`).join(', ')}
         FROM firsts f)
       SELECT a AS as_of_day, c AS cohort_day, count(*) AS cohort_size,
         ${[1, 7, 14, 28].map((k) => `CASE WHEN c + ${k} <= a THEN count(*) FILTER (WHERE r${k}) END AS retained_d${k}`).join(', ')},
         count(*) FILTER (WHERE last_day <= a - 14) AS churned
       FROM flags GROUP BY a, c`,
    );
    const sets: [string, string, string][] = [
      ['device_type', 'app_version', 'country'],
      ['device_type', "'ALL'", 'country'],
      ['device_type', "'ALL'", "'ALL'"],
      ["'ALL'", "'ALL'", 'country'],
      ["'ALL'", "'ALL'", "'ALL'"],
    ];
    await expectEqual(
      'aggregated',
      'daily_aggregates_with_dimensions',
      DAYS,
      sets
        .map(
          ([d, a, c]) => `SELECT ev.*, coalesce(ss.total_sessions, 0) AS total_sessions FROM (
             SELECT day, ${d} AS device_type, ${a} AS app_version, ${c} AS country, count(*) AS total_events,
               count(*) FILTER (WHERE event_type = 'app_install') AS total_installs, count(*) FILTER (WHERE event_type = 'page_view') AS total_views,
               count(*) FILTER (WHERE event_type = 'video_play') AS total_plays, count(DISTINCT user_id) AS unique_users
             FROM exp_events GROUP BY ALL) ev
           LEFT JOIN (
             SELECT day, ${d} AS device_type, ${a} AS app_version, ${c} AS country, count(*) AS total_sessions
             FROM exp_sessions GROUP BY ALL) ss USING (day, device_type, app_version, country)`,
        )
        .join(' UNION ALL '),
    );
  });

  it('re-running an hour and a day changes no byte, and 1 shard gives the same tables as 4', async () => {
    const before = await outputEtags();
    const now = END + 2 * 86_400_000;
    await runHourly(ctx, HOURS[30], { now });
    await runDaily(ctx, DAYS[1], { shards: 4, now });
    await runDaily(ctx, DAYS[2], { shards: 1, now });
    const after = await outputEtags();
    expect(after.size).toBe(before.size);
    expect([...after].filter(([k, v]) => before.get(k) !== v)).toEqual([]);
  });

  it('compaction, even interrupted, changes nothing the batch layer publishes', async () => {
    const now = END + 2 * 86_400_000;
    const s3 = s3Client(cfg);
    const perHour = new Map<string, number>();
    for (const o of await listObjects(s3, cfg.s3.bucket, lakePaths.rawEventsPrefix)) {
      const m = /dt=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\//.exec(o.key)!;
      perHour.set(`${m[1]}T${m[2]}`, (perHour.get(`${m[1]}T${m[2]}`) ?? 0) + 1);
    }
    const [hour] = [...perHour].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0];
    const before = await outputEtags();
    const rawBefore = await listObjects(s3, cfg.s3.bucket, lakePaths.rawHourPrefix(hour));
    expect(rawBefore.length).toBeGreaterThan(1);
    // An interrupted compaction leaves a merged copy beside its inputs: simulate one with a plain copy.
    await copyObject(s3, cfg.s3.bucket, rawBefore[0].key, lakePaths.compactedObject(hour, 'interrupted', 0));
    const m1 = await runHourly(ctx, hour, { now });
    const result = await compactHour(ctx, hour, { now });
    expect(result).toMatchObject({ compacted: true, inputs: rawBefore.length });
    const again = await compactHour(ctx, hour, { now });
    expect(again.compacted).toBe(false);
    const rawAfter = await listObjects(s3, cfg.s3.bucket, lakePaths.rawHourPrefix(hour));
    expect(rawAfter.map((o) => o.key).sort()).toEqual([lakePaths.compactedObject(hour, 'interrupted', 0), ...result.outputs].sort());
    const m2 = await runHourly(ctx, hour, { now });
    expect(m2.duplicates).toEqual(m1.duplicates);
    expect(m2.rowCounts.events).toBe(m1.rowCounts.events);
    const after = await outputEtags();
    expect([...after].filter(([k, v]) => before.get(k) !== v)).toEqual([]);
  });

  it('fails clearly on a corrupt object, missing hours, and periods malformed or in the future', async () => {
    const s3 = s3Client(cfg);
    const key = lakePaths.rawObject('2025-01-09T05', 0, '0', '9');
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: 'PAR1 this is not parquet' }));
    const err = await runHourly(ctx, '2025-01-09T05').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptObjectError);
    expect((err as CorruptObjectError).key).toBe(key);
    expect((err as Error).message).toContain(key);
    expect(await getJson(s3, cfg.s3.bucket, lakePaths.manifest('hourly', '2025-01-09T05'))).toBeNull();

    const missing = await runDaily(ctx, '2025-01-13').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(MissingHoursError);
    expect((missing as MissingHoursError).hours).toEqual(hoursOfDay('2025-01-13'));
    await expect(runHourly(ctx, '2025-01-10T24')).rejects.toBeInstanceOf(NonRetryableBatchError);
    await expect(runHourly(ctx, '2025-1-10T01')).rejects.toBeInstanceOf(NonRetryableBatchError);
    await expect(runDaily(ctx, new Date(Date.now() + 86_400_000).toISOString().slice(0, 10))).rejects.toThrow(/in the future/);
    expect(await listObjects(s3, cfg.s3.bucket, '_staging/')).toEqual([]);
  });
});
