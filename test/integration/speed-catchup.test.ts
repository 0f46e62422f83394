/**
 * Catch-up at any lag (issue 17): the topic is filled with ≥ 500,000 events
 * spread over more than 3 days of event time while no speed layer runs; a
 * real speed-layer process (`speed-layer/main.ts`) then drains it with default
 * fetch sizes and ends with every count exact, without exiting. A second
 * consumer group (its own key prefix) drains the same backlog through a
 * SIGKILL in the middle of the catch-up and a restart, and ends exact too.
 * The lake writer then drains the same backlog with bounded memory and small
 * objects, every message landing in the lake once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, redisClient, s3Client } from '../../common/clients';
import { loadConfig, REPO_ROOT, type Config } from '../../common/config';
import { ALL, type EventRecord } from '../../common/contract';
import { lakePaths } from '../../common/lake';
import { readBinge, readOffsets, readStats, speedKeys } from '../../common/speed-keys';
import { deleteObjects, listObjects, stageObjects, withScratchDir } from '../../batch-layer/lake-io';
import { isolatedConfig } from '../support/isolated';
import { expectedValues, simulatedRecords, sum, waitFor, HOUR_MS } from './speed-support';

const MIN = 60_000;
const DAY = 24 * HOUR_MS;
const WINDOW_MS = 3 * DAY + 6 * HOUR_MS;

/** Fill the topic fast: several idempotent producers, each sending its own slice in large sends. */
async function produceFast(cfg: Config, records: EventRecord[]): Promise<void> {
  const producers = 3;
  const kafka = kafkaClient(cfg, 'speed-catchup-producer');
  await Promise.all(
    Array.from({ length: producers }, async (_, k) => {
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      try {
        for (let i = k * 5000; i < records.length; i += producers * 5000) {
          const slice = records.slice(i, i + 5000);
          await producer.send({ topic: cfg.kafka.rawTopic, acks: -1, messages: slice.map((r) => ({ key: r.user_id, value: JSON.stringify(r) })) });
        }
      } finally {
        await producer.disconnect();
      }
    }),
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface SpeedChild {
  proc: ChildProcess;
  port: number;
  /** Peak RSS (VmHWM) last read from /proc, MiB. */
  peakMiB: number;
  exits: Array<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startSpeed(cfg: Config): Promise<SpeedChild> {
  const port = await freePort();
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'speed-layer/main.ts'), '--no-alerts'], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      TOPIC_RAW: cfg.kafka.rawTopic,
      TOPIC_DLQ: cfg.kafka.dlqTopic,
      SPEED_GROUP: cfg.kafka.speedGroup,
      REDIS_KEY_PREFIX: cfg.redis.keyPrefix,
      SPEED_RETENTION_MS: String(cfg.speed.retentionMs),
      SPEED_PORT: String(port),
      // The killed member leaves the group after 6 s instead of 30 s.
      SPEED_SESSION_TIMEOUT_MS: '6000',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const child: SpeedChild = { proc, port, peakMiB: 0, exits: [] };
  proc.stderr!.on('data', (d: Buffer) => process.stderr.write(`[speed child ${proc.pid}] ${d}`));
  proc.on('exit', (code, signal) => child.exits.push({ code, signal }));
  return child;
}

function samplePeak(child: SpeedChild): void {
  try {
    const kb = Number(/^VmHWM:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${child.proc.pid}/status`, 'utf8'))?.[1] ?? 0);
    child.peakMiB = Math.max(child.peakMiB, kb / 1024);
  } catch {
    /* exited */
  }
}

function exited(child: SpeedChild): Promise<NodeJS.Signals | number | null> {
  const { proc } = child;
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.signalCode ?? proc.exitCode);
  return new Promise((r) => proc.once('exit', (code, signal) => r(signal ?? code)));
}

/** Wait until Redis' stored offsets reach `total`, failing at once if the process exits. */
async function drained(redis: Redis, cfg: Config, child: SpeedChild, total: number, timeoutMs: number, until = total): Promise<number> {
  return waitFor(
    `the speed layer to apply ${until} of ${total} messages`,
    async () => {
      samplePeak(child);
      if (child.exits.length > 0) throw new Error(`speed layer exited: ${JSON.stringify(child.exits)}`);
      const applied = sum(await readOffsets(redis, cfg));
      return applied >= until ? applied : undefined;
    },
    timeoutMs,
    200,
  );
}

/** Every count the speed layer keeps, against the exact values (stats, minute and second counts, playback, top content, binge, daily users). */
async function expectExact(redis: Redis, cfg: Config, records: EventRecord[], now: number): Promise<void> {
  const exp = expectedValues(cfg, records, now);
  const keys = speedKeys(cfg);
  const stats = await readStats(redis, cfg);
  expect({ events: stats.events, duplicates: stats.duplicates, late: stats.late_minute, unparseable: stats.unparseable }).toEqual({
    events: exp.events,
    duplicates: exp.duplicates,
    late: exp.late,
    unparseable: 0,
  });
  const numbers = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  for (const g of ['minute', 'second'] as const) {
    expect((await redis.keys(`${cfg.redis.keyPrefix}{cnt}:${g}:*`)).length).toBe(exp.counts[g].size);
    const buckets = [...exp.counts[g].keys()];
    // Concurrent reads: the test's client pipelines them.
    const got = await Promise.all(buckets.map((b) => redis.hgetall(keys.counts(g, b))));
    buckets.forEach((bucket, i) => expect({ bucket, fields: numbers(got[i]) }).toEqual({ bucket, fields: exp.counts[g].get(bucket) }));
  }
  const minutes = [...exp.playback.keys()];
  const pb = await Promise.all(minutes.map((b) => redis.hgetall(keys.playback(b))));
  minutes.forEach((bucket, i) => {
    const e = Object.fromEntries(Object.entries(exp.playback.get(bucket)!).filter(([, n]) => n > 0));
    expect({ bucket, pb: numbers(pb[i]) }).toEqual({ bucket, pb: e });
  });
  for (const [hour, plays] of exp.top) {
    const flat = await redis.zrangebyscore(keys.topContent(hour), '-inf', '+inf', 'WITHSCORES');
    const got: Record<string, number> = {};
    for (let i = 0; i < flat.length; i += 2) got[flat[i]] = Number(flat[i + 1]);
    expect({ hour, got }).toEqual({ hour, got: plays });
  }
  expect(exp.binge.size).toBeGreaterThanOrEqual(3);
  for (const [day, users] of exp.binge) expect(await readBinge(redis, cfg, day)).toMatchObject({ day, users: [...users].sort() });
  // Distinct users are HyperLogLog estimates: within 2 % per day.
  for (const [k, users] of exp.users.day) {
    if (!k.endsWith(`:${ALL}`)) continue;
    const est = await redis.pfcount(keys.hll('day', Number(k.slice(0, k.indexOf(':'))), ALL));
    expect(Math.abs(est - users.size)).toBeLessThanOrEqual(Math.max(2, 0.02 * users.size));
  }
}

describe("the speed layer's Redis client", () => {
  it('fails a command too large to spread on its own, without an uncaught exception (no auto-pipelining)', async () => {
    // The largest argument count a call can take here; the speed layer's plans once exceeded it.
    const f = (...a: unknown[]) => a.length;
    let [lo, hi] = [1000, 10_000_000];
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      try {
        f(...new Array<string>(mid).fill('x'));
        lo = mid;
      } catch {
        hi = mid - 1;
      }
    }
    const cfg = loadConfig({ ...process.env, REDIS_KEY_PREFIX: `t:speed-client-${process.pid}:` });
    const client = redisClient(cfg, { autoPipelining: false });
    try {
      const sha = (await client.script('LOAD', 'return #ARGV')) as string;
      // Spread once here, as the old apply step did: with auto-pipelining, ioredis spreads it again, fails, and its
      // pipeline then throws 'results[i] is not iterable' from a timer (vitest reports that as an unhandled error).
      const args = new Array<string>(Math.floor(lo * 0.7)).fill('x');
      const concurrent = client.get(`${cfg.redis.keyPrefix}absent`);
      expect(await client.evalsha(sha, 0, ...args)).toBe(args.length);
      expect(await concurrent).toBeNull();
      // The way apply.ts passes a plan: one array, any size.
      const huge = new Array<string>(lo * 2).fill('y');
      expect(await client.evalsha(sha, 0, huge)).toBe(huge.length);
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      client.disconnect();
    }
  });
});

describe('speed layer: restart behind a backlog of days', () => {
  let cfg: Config;
  let redis: Redis;
  let records: EventRecord[];
  let now: number;
  const children: SpeedChild[] = [];

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-catchup', { SPEED_RETENTION_MS: String(4 * DAY) });
    redis = redisClient(cfg);
    now = Date.now();
    const boundary = now - cfg.speed.secondRetentionMs;
    // Away from the per-second retention boundary by more than the test can last, so the expected values do not depend on when an event is applied.
    records = simulatedRecords(cfg, { seed: 17, users: 12_000, windowMs: WINDOW_MS, now, duplicateFraction: 0.03 }).filter((r) => Math.abs(r.ts - boundary) > 20 * MIN);
    await produceFast(cfg, records);
  });

  afterAll(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    if (redis && cfg) {
      // Not dropIsolated: its one DEL of every key would spread ~100,000 names onto the call stack.
      const keys = await redis.keys(`${cfg.redis.keyPrefix}*`); // the second group's prefix is under it
      for (let i = 0; i < keys.length; i += 1000) await redis.unlink(...keys.slice(i, i + 1000));
      const s3 = s3Client(cfg);
      await deleteObjects(s3, cfg.s3.bucket, (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key));
    }
    redis?.disconnect();
  });

  it('holds ≥ 500,000 events over more than 3 days of event time', () => {
    expect(records.length).toBeGreaterThanOrEqual(500_000);
    let [lo, hi] = [Infinity, -Infinity];
    for (const r of records) [lo, hi] = [Math.min(lo, r.ts), Math.max(hi, r.ts)];
    expect(hi - lo).toBeGreaterThan(3 * DAY);
  });

  it('drains the backlog in bounded steps, stays up, and every count is exact', async () => {
    const child = await startSpeed(cfg);
    children.push(child);
    const t0 = Date.now();
    await drained(redis, cfg, child, records.length, 150_000);
    const seconds = (Date.now() - t0) / 1000;
    expect(await fetch(`http://127.0.0.1:${child.port}/health`).then((r) => r.json())).toMatchObject({ status: 'ok' });
    const metrics = await fetch(`http://127.0.0.1:${child.port}/metrics`).then((r) => r.text());
    const max = (name: string) => largestBucket(metrics, name);
    process.stderr.write(
      `[speed-catchup] ${records.length} events drained in ${seconds.toFixed(1)} s (${Math.round(records.length / seconds)} ev/s), peak RSS ${Math.round(child.peakMiB)} MiB, ` +
        `largest step ≤ ${max('speed_step_args')} args / ${max('speed_step_keys')} keys / ${max('speed_step_bytes')} bytes, failed steps ${metricSum(metrics, 'speed_apply_failures_total')}\n`,
    );
    expect(metricSum(metrics, 'speed_apply_failures_total')).toBe(0);
    expect(max('speed_step_args')).toBeLessThanOrEqual(cfg.speed.stepMaxArgs);
    expect(child.exits).toEqual([]);
    await expectExact(redis, cfg, records, now);
    child.proc.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
  });

  it('a SIGKILL in the middle of the catch-up and a restart still end exact', async () => {
    // Same topic, another group and key prefix: a speed layer that never saw the backlog.
    const cfg2 = loadConfig({ ...process.env, TOPIC_RAW: cfg.kafka.rawTopic, TOPIC_DLQ: cfg.kafka.dlqTopic, SPEED_GROUP: `${cfg.kafka.speedGroup}-k`, REDIS_KEY_PREFIX: `${cfg.redis.keyPrefix}k:`, SPEED_RETENTION_MS: String(cfg.speed.retentionMs) });
    const first = await startSpeed(cfg2);
    children.push(first);
    const atKill = await drained(redis, cfg2, first, records.length, 120_000, Math.floor(records.length * 0.4));
    first.proc.kill('SIGKILL');
    expect(await exited(first)).toBe('SIGKILL');
    expect(atKill).toBeLessThan(records.length);

    const second = await startSpeed(cfg2);
    children.push(second);
    await drained(redis, cfg2, second, records.length, 150_000);
    expect(second.exits).toEqual([]);
    await expectExact(redis, cfg2, records, now);
    second.proc.kill('SIGTERM');
    expect(await exited(second)).toBe(0);
  });

  it('the lake writer drains the same backlog with bounded memory and small objects, every message in the lake once', async () => {
    const port = await freePort();
    const maxBuffer = 64 * 1024 * 1024;
    const proc = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'batch-layer/lake-writer/main.ts')], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        TOPIC_RAW: cfg.kafka.rawTopic,
        TOPIC_DLQ: cfg.kafka.dlqTopic,
        LAKE_GROUP: cfg.kafka.lakeGroup,
        S3_BUCKET: cfg.s3.bucket,
        LAKE_WRITER_PORT: String(port),
        LAKE_MAX_BUFFER_BYTES: String(maxBuffer),
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const writer: SpeedChild = { proc, port, peakMiB: 0, exits: [] };
    children.push(writer);
    proc.stderr!.on('data', (d: Buffer) => process.stderr.write(`[lake writer ${proc.pid}] ${d}`));
    proc.on('exit', (code, signal) => writer.exits.push({ code, signal }));
    const admin = kafkaClient(cfg, 'speed-catchup-lake').admin();
    await admin.connect();
    const t0 = Date.now();
    let firstCommitAt = 0;
    try {
      await waitFor(
        'the lake writer to commit the end of every partition',
        async () => {
          samplePeak(writer);
          if (writer.exits.length > 0) throw new Error(`lake writer exited: ${JSON.stringify(writer.exits)}`);
          const [t] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [cfg.kafka.rawTopic] });
          const committed = t.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
          if (committed > 0 && firstCommitAt === 0) firstCommitAt = Date.now();
          return committed >= records.length ? true : undefined;
        },
        180_000,
        250,
      );
    } finally {
      await admin.disconnect();
    }
    const seconds = (Date.now() - t0) / 1000;
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    proc.kill('SIGTERM');
    expect(await exited(writer)).toBe(0);

    const objects = await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawEventsPrefix);
    const largest = objects.reduce((n, o) => Math.max(n, o.size), 0);
    process.stderr.write(
      `[speed-catchup] lake writer: ${records.length} messages committed in ${seconds.toFixed(1)} s (first commit after ${((firstCommitAt - t0) / 1000).toFixed(1)} s), ` +
        `peak RSS ${Math.round(writer.peakMiB)} MiB, ${objects.length} objects, largest ${(largest / 1024).toFixed(0)} KiB\n`,
    );
    // It commits as it goes (catch-up rolls), not only once files reach the 60 s roll age.
    expect(metricSum(metrics, 'lake_writer_catchup_rolls_total')).toBeGreaterThan(0);
    expect(firstCommitAt - t0).toBeLessThan(30_000);
    expect(metricSum(metrics, 'lake_writer_upload_failures_total')).toBe(0);
    // Bounded by the buffer budget and the process' own footprint, not by the backlog (≈ 250 MB of records).
    expect(writer.peakMiB).toBeLessThan(600);
    // Objects of about one partition-hour each: nothing near the backlog's size.
    expect(largest).toBeLessThan(1024 * 1024);
    // Every message once, in the hour of its event time.
    const rows = await withScratchDir(cfg, async (dir) => {
      await stageObjects(s3Client(cfg), cfg.s3.bucket, objects.map((o) => o.key), dir);
      const db = await DuckDBInstance.create(':memory:');
      const conn = await db.connect();
      try {
        const glob = path.join(dir, lakePaths.rawEventsPrefix, '*/*/*.parquet');
        const sql = `SELECT count(*)::INT AS n, count(DISTINCT (kafka_partition, kafka_offset))::INT AS positions,
                            count(*) FILTER (WHERE strftime(make_timestamp(ts * 1000), '%Y-%m-%dT%H') <> dt::VARCHAR || 'T' || lpad(hour::VARCHAR, 2, '0'))::INT AS misplaced
                     FROM read_parquet('${glob}', hive_partitioning = true)`;
        return (await conn.runAndReadAll(sql)).getRowObjectsJson()[0] as { n: number; positions: number; misplaced: number };
      } finally {
        conn.closeSync();
        db.closeSync();
      }
    });
    expect(rows).toEqual({ n: records.length, positions: records.length, misplaced: 0 });
  });
});

function metricSum(text: string, name: string): number {
  let s = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) s += Number(line.slice(line.lastIndexOf(' ') + 1));
  return s;
}

/** The smallest histogram bound holding every observation (+Inf when some exceed the largest bound). */
function largestBucket(text: string, name: string): number {
  const count = metricSum(text, `${name}_count`);
  let best = Infinity;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`).exec(line);
    if (m && Number(m[2]) >= count && m[1] !== '+Inf') best = Math.min(best, Number(m[1]));
  }
  return best;
}
