/**
 * Erasure of users (GDPR art. 17 / CCPA deletion) on the real stack: a simulated two-day
 * lake (raw events and dead letters as the lake writer writes them, every hour and day
 * published) and the speed layer's user-holding keys; two users are erased through the
 * erasure workflow, whose worker is stopped mid-way and replaced. Afterwards neither id
 * appears in any object of the bucket (bytes and Parquet contents) nor in any Redis key or
 * value, and every published table equals the independent SQL over the NDJSON without them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { Client } from '@temporalio/client';
import type { WorkflowBundle } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type RunManifest } from '../../common/lake';
import { logger } from '../../common/log';
import { getJson, listObjects, stageObjects } from '../../common/lake-io';
import { speedKeys } from '../../common/speed-keys';
import { writeDlqParquet, writeRawParquet, type DlqRow, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { hoursOfDay, jobContext, runDaily, runHourly } from '../../batch-layer/jobs';
import { Duck, sqlList, sqlString } from '../../batch-layer/jobs/duck';
import { erasureAuditPrefix, erasurePlanKey, userHash, type ErasureAudit } from '../../batch-layer/erasure/lake';
import { writeNdjson, type SimulatedSend } from '../../ingestion/simulator/generate';
import { erasureStatus, startErasure } from '../../workflows/erasure-client';
import { startServing, type Serving } from '../../serving-layer/service';
import { buildWorkflowBundle } from '../../workflows/service';
import type { eraseUsers } from '../../workflows/workflows';
import { main as eraseCli } from '../../workflows/cli/erase';
import { defineExpected, expectedSql } from '../support/expected-sql';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
import { orchestrationOverrides, startTestWorker, temporalClient, waitFor } from './workflow-support';

process.env.LOG_LEVEL ??= 'warn';

const DAYS = ['2025-02-03', '2025-02-04'];
const START = Date.parse(`${DAYS[0]}T00:00:00Z`);
const END = Date.parse('2025-02-05T00:00:00Z');
const CLOCK = END + 86_400_000;
const NOW = END + 2 * 86_400_000;
const PARTITIONS = 2;
const HOURS = DAYS.flatMap(hoursOfDay);
const SEED = 57;
const ADMIN = 'erasure-admin-key';

let cfg: Config;
let redis: Redis;
let client: Client;
let bundle: WorkflowBundle;
let tmp: string;
let duck: Duck;
const sends: SimulatedSend[] = [];
let erased: string[] = [];

function partitionOf(userId: string): number {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) | 0;
  return Math.abs(h) % PARTITIONS;
}

/** What the collector + lake writer would write: valid records in raw/events, the others as dead letters in raw/dlq. */
async function writeLake(): Promise<void> {
  const offsets = new Array<number>(PARTITIONS).fill(0);
  const raw = new Map<string, RawRow[]>();
  const dlq = new Map<string, DlqRow[]>();
  let dlqOffset = 0;
  for (const send of sends) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(send.line);
    } catch {
      parsed = undefined;
    }
    const result = parsed === undefined ? { ok: false as const, reason: 'malformed_json' as const, detail: 'not JSON' } : validateEvent(parsed, CLOCK);
    if (!result.ok) {
      const day = new Date(send.sendAt).toISOString().slice(0, 10);
      const row: DlqRow = { dead: { reason: result.reason, detail: result.detail, received_at: send.sendAt, raw: send.line }, topic: cfg.kafka.dlqTopic, partition: 0, offset: String(dlqOffset++) };
      dlq.set(day, [...(dlq.get(day) ?? []), row]);
      continue;
    }
    const record: EventRecord = { ...result.record, received_at: send.sendAt };
    const partition = partitionOf(record.user_id);
    const k = `${hourId(record.ts)}|${partition}`;
    raw.set(k, [...(raw.get(k) ?? []), { record, partition, offset: String(offsets[partition]++) }]);
  }
  const s3 = s3Client(cfg);
  let i = 0;
  for (const [k, rows] of raw) {
    const [hour, p] = k.split('|');
    const file = path.join(tmp, 'raw', `${i++}.parquet`);
    await writeRawParquet(rows, file);
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: lakePaths.rawObject(hour, Number(p), rows[0].offset, rows.at(-1)!.offset), Body: fs.readFileSync(file) }));
  }
  for (const [day, rows] of dlq) {
    const file = path.join(tmp, 'dlq', `${day}.parquet`);
    await writeDlqParquet(rows, file);
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: lakePaths.dlqObject(day, 0, rows[0].offset, rows.at(-1)!.offset), Body: fs.readFileSync(file) }));
  }
}

/** The speed layer's user-holding keys for every user of the data (the erased ones and the others). */
async function writeSpeedKeys(users: readonly string[]): Promise<void> {
  const keys = speedKeys(cfg);
  const p = redis.pipeline();
  for (const [n, u] of users.entries()) {
    p.zadd(keys.liveUsers(), END - n, u);
    p.sadd(keys.bingeDay(DAYS[1]), u);
    p.xadd(keys.bingeStream(), '*', 'user', u, 'day', DAYS[1], 'ts', String(END - n));
    p.zadd(keys.bingeCompletes(u), END - n, `evt-hash-${n}`);
    p.pfadd(keys.hll('day', START + 86_400_000, 'ALL'), u);
  }
  await p.exec();
}

/** Every object of the bucket whose bytes or (for Parquet) any cell holds one of the ids. */
async function objectsHolding(ids: readonly string[]): Promise<string[]> {
  const s3 = s3Client(cfg);
  const hits: string[] = [];
  const objects = await listObjects(s3, cfg.s3.bucket, '');
  const dir = fs.mkdtempSync(path.join(tmp, 'scan-'));
  for (const [i, o] of objects.entries()) {
    const res = await s3.send(new GetObjectCommand({ Bucket: cfg.s3.bucket, Key: o.key }));
    const bytes = Buffer.from(await res.Body!.transformToByteArray());
    if (ids.some((id) => bytes.includes(id))) hits.push(`${o.key} (bytes)`);
    if (!o.key.endsWith('.parquet')) continue;
    // A name per object: DuckDB caches a Parquet file's metadata by its path.
    const file = path.join(dir, `${i}.parquet`);
    fs.writeFileSync(file, bytes);
    const n = await duck.scalar(
      `SELECT count(*) FROM read_parquet(${sqlString(file)}, hive_partitioning = false) t WHERE ${ids.map((id) => `contains(CAST(t AS VARCHAR), ${sqlString(id)})`).join(' OR ')}`,
    );
    if (n > 0) hits.push(`${o.key} (${n} rows)`);
  }
  return hits;
}

/** Every Redis key of the test's prefix whose name or value holds one of the ids. */
async function redisHolding(ids: readonly string[]): Promise<string[]> {
  const hits: string[] = [];
  const has = (b: Buffer | string) => ids.some((id) => Buffer.from(b).includes(id));
  for (const key of await redis.keys(speedKeys(cfg).glob())) {
    if (has(key)) {
      hits.push(key);
      continue;
    }
    const type = await redis.type(key);
    let values: (Buffer | string)[] = [];
    if (type === 'string') values = [(await redis.getBuffer(key))!];
    else if (type === 'hash') values = Object.entries(await redis.hgetall(key)).flat();
    else if (type === 'set') values = await redis.smembers(key);
    else if (type === 'zset') values = await redis.zrange(key, '0', '-1');
    else if (type === 'list') values = await redis.lrange(key, '0', '-1');
    else if (type === 'stream') values = (await redis.xrange(key, '-', '+')).flatMap(([, f]) => f);
    if (values.some(has)) hits.push(`${key} (${type})`);
  }
  return hits;
}

async function loadActual(table: string, periods: readonly string[]): Promise<string> {
  const s3 = s3Client(cfg);
  const keys = await Promise.all(periods.map(async (p) => (await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest(p.length === 10 ? 'daily' : 'hourly', p)))!.outputs[table]));
  const files = await stageObjects(s3, cfg.s3.bucket, keys, path.join(tmp, 'actual', String(Math.random()).slice(2)));
  const view = `actual_${table}`;
  await duck.run(`CREATE OR REPLACE VIEW ${view} AS SELECT * FROM read_parquet(${sqlList(files)}, hive_partitioning = false)`);
  return view;
}

async function expectEqual(table: string, periods: readonly string[], expected: string): Promise<void> {
  const view = await loadActual(table, periods);
  await duck.run(`CREATE OR REPLACE TEMP TABLE expected AS ${expected}`);
  const cols = (await duck.rows(`DESCRIBE expected`)).map((r) => `"${r.column_name as string}"`).join(', ');
  const unexpected = await duck.json(`SELECT ${cols} FROM ${view} EXCEPT ALL SELECT ${cols} FROM expected LIMIT 5`);
  const missing = await duck.json(`SELECT ${cols} FROM expected EXCEPT ALL SELECT ${cols} FROM ${view} LIMIT 5`);
  expect({ table, missing, unexpected }).toEqual({ table, missing: [], unexpected: [] });
  expect(await duck.scalar(`SELECT count(*) FROM ${view}`)).toBeGreaterThan(0);
}

beforeAll(async () => {
  quietTemporalRuntime();
  cfg = await isolatedConfig('erasure', { ...orchestrationOverrides('erasure'), BATCH_SUPERSEDED_GRACE_MS: '3000', SERVING_ADMIN_KEYS: ADMIN, SERVING_API_KEYS: 'erasure-read-key' });
  redis = redisClient(cfg);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'erasure-it-'));
  const ndjson = path.join(tmp, 'sends.ndjson');
  const bundling = buildWorkflowBundle();
  await writeNdjson(ndjson, { seed: SEED, users: 14, startMs: START, endMs: END, duplicateFraction: 0.04, invalidFraction: 0.04 }, (s) => sends.push(s));
  duck = await Duck.open({ threads: 1 });
  await defineExpected(duck, ndjson, CLOCK);
  // Two active users whose ids no other id contains (user_57_1 is inside user_57_10), with the most events.
  const all = (await duck.rows(`SELECT user_id, count(*) AS n FROM exp_events GROUP BY user_id ORDER BY n DESC, user_id`)).map((r) => String(r.user_id));
  erased = all.filter((u) => !all.some((o) => o !== u && o.includes(u))).slice(0, 2);
  expect(erased).toHaveLength(2);
  await writeLake();
  const ctx = jobContext(cfg, logger('erasure-test'));
  for (const hour of HOURS) await runHourly(ctx, hour, { now: NOW });
  for (const day of DAYS) await runDaily(ctx, day, { now: NOW });
  await writeSpeedKeys(all);
  bundle = await bundling;
  client = await temporalClient(cfg);
}, 600_000);

afterAll(async () => {
  duck?.close();
  await client?.connection.close();
  if (cfg && redis) await dropIsolated(cfg, redis).catch(() => undefined);
  redis?.disconnect();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('erasure of two users', () => {
  it('the lake and Redis hold them before', async () => {
    expect((await objectsHolding(erased)).some((h) => h.startsWith('raw/dlq/'))).toBe(true);
    expect((await objectsHolding(erased)).some((h) => h.startsWith('aggregated/binge_users/') || h.startsWith('processed/sessions/'))).toBe(true);
    expect((await redisHolding(erased)).length).toBeGreaterThan(0);
  }, 120_000);

  it('removes them from every object and key, survives a worker stopped mid-way, recomputes exactly, and leaves an audit record without the ids', async () => {
    const requestedAt = Date.now();
    // Through the admin API (no worker yet: the request waits in Temporal); the CLI starts it through the same client code (workflows/erasure-client.ts).
    const serving: Serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
    let reply: { request_id: string; workflow_id: string; workflow_url: string; status_url: string };
    try {
      const post = (users: string[]) =>
        fetch(`${serving.url}/v1/admin/erasures`, { method: 'POST', headers: { 'x-api-key': ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ users }) });
      const res = await post(erased);
      expect(res.status).toBe(202);
      reply = (await res.json()) as typeof reply;
      expect(reply.request_id).toMatch(/^er-[0-9a-f]{16}$/);
      expect(reply.workflow_url).toContain(encodeURIComponent(reply.workflow_id));
      // The same users again (any order) join the running request.
      expect(((await (await post([...erased].reverse())).json()) as typeof reply).request_id).toBe(reply.request_id);
      const got = await fetch(`${serving.url}${reply.status_url}`, { headers: { 'x-api-key': ADMIN } });
      expect(got.status).toBe(200);
      expect(await got.json()).toMatchObject({ request_id: reply.request_id, workflow_id: reply.workflow_id, state: 'running', audit_key: null });
    } finally {
      await serving.stop();
    }
    const started = { requestId: reply.request_id, workflowId: reply.workflow_id, handle: client.workflow.getHandle<typeof eraseUsers>(reply.workflow_id) };
    // The CLI's path names the same request.
    expect((await startErasure(client, cfg, erased)).requestId).toBe(started.requestId);
    let worker = await startTestWorker(cfg, bundle);

    // Stop the worker while a step of the erasure is in flight, then start another one.
    const midway = await waitFor('the erasure to reach its recompute', async () => {
      const s = await erasureStatus(client, cfg, started.requestId).catch(() => null);
      return s?.progress && ['recomputing hours', 'recomputing days'].includes(s.progress.step) ? s.progress : null;
    }, 240_000, 100);
    await worker.stop();
    const stalled = await erasureStatus(client, cfg, started.requestId);
    expect(stalled?.state).toBe('running');
    worker = await startTestWorker(cfg, bundle);
    try {
      const result = await started.handle.result();
      expect(result.progress.step).toBe('finished');
      expect(result.progress.periods.hourly.done).toBe(result.progress.periods.hourly.total);
      expect(result.progress.periods.daily.done).toBe(result.progress.periods.daily.total);
      expect(result.progress.periods.daily.total).toBeGreaterThan(0);
      expect(result.progress.failures).toEqual([]);
      expect(midway.round).toBe(0);

      const status = (await erasureStatus(client, cfg, started.requestId))!;
      expect(status.state).toBe('completed');
      expect(status.auditKey).toBe(result.auditKey);
      const d = await client.workflow.getHandle(started.workflowId).describe();
      expect(Object.fromEntries(d.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value]))).toMatchObject({ BatchKind: 'erasure', BatchPeriod: started.requestId });

      expect(await objectsHolding(erased)).toEqual([]);
      expect(await redisHolding(erased)).toEqual([]);
      // The other users' speed keys stay.
      expect(await redis.zcard(speedKeys(cfg).liveUsers())).toBeGreaterThan(0);

      // Every published table equals the independent SQL without the two users.
      await duck.run(`DELETE FROM exp_events WHERE user_id IN (${erased.map(sqlString).join(', ')})`);
      await duck.run(`DELETE FROM exp_sessions WHERE user_id IN (${erased.map(sqlString).join(', ')})`);
      await expectEqual('events', HOURS, expectedSql.events());
      await expectEqual('hourly_events', HOURS, expectedSql.hourlyEvents(HOURS));
      await expectEqual('hourly_users', HOURS, expectedSql.hourlyUsers(HOURS));
      await expectEqual('hourly_playback', HOURS, expectedSql.hourlyPlayback(HOURS));
      await expectEqual('sessions', DAYS, expectedSql.sessions());
      await expectEqual('user_daily_activity', DAYS, expectedSql.userDailyActivity());
      await expectEqual('daily_sessions', DAYS, expectedSql.dailySessions());
      await expectEqual('clicks_to_play', DAYS, expectedSql.clicksToPlay());
      await expectEqual('top_paths', DAYS, expectedSql.topPaths());
      await expectEqual('binge_users', DAYS, expectedSql.bingeUsers());
      await expectEqual('retention_cohorts', DAYS, expectedSql.retentionCohorts());
      await expectEqual('daily_aggregates_with_dimensions', DAYS, expectedSql.dailyAggregatesWithDimensions());

      // The audit record: counts and keyed hashes, never an id; the plan is gone.
      const s3 = s3Client(cfg);
      const audits = await listObjects(s3, cfg.s3.bucket, erasureAuditPrefix);
      expect(audits.map((o) => o.key)).toEqual([result.auditKey]);
      const audit = (await getJson<ErasureAudit>(s3, cfg.s3.bucket, result.auditKey))!;
      expect(audit).toMatchObject({ requestId: started.requestId, workflowId: started.workflowId, users: 2 });
      expect(Date.parse(audit.requestedAt)).toBeGreaterThanOrEqual(requestedAt - 1000);
      expect(audit.userHashes).toEqual(erased.map((u) => userHash(cfg.erasure.auditKey, u)).sort());
      expect(audit.objectsRewritten.raw).toBeGreaterThan(0);
      expect(audit.objectsRewritten.dlq).toBeGreaterThan(0);
      expect(audit.objectsRewritten.published).toBeGreaterThan(0);
      expect(audit.periodsRecomputed.daily).toEqual(DAYS);
      expect(audit.userTables).toEqual(expect.arrayContaining(['events', 'sessions', 'user_daily_activity', 'binge_users']));
      expect(await getJson(s3, cfg.s3.bucket, erasurePlanKey(started.requestId))).toBeNull();
      expect(await listObjects(s3, cfg.s3.bucket, '_staging/')).toEqual([]);
    } finally {
      await worker.stop();
    }
  }, 900_000);

  it('the CLI refuses a call without users or with a malformed request id, before connecting', async () => {
    expect(await eraseCli([])).toBe(2);
    expect(await eraseCli(['--status', 'not-an-id'])).toBe(2);
  });
});
