/**
 * A Redis of the test's own (its own port, its own dir, AOF with appendfsync everysec as the
 * stack runs it) that a test can SIGKILL and restart from an older or an empty AOF, while a
 * speed layer keeps running against it. The shared stack's Redis is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { expect } from 'vitest';
import type { Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';
import { readBinge, readCountBreakdown, readPlayback, readStats, speedKeys } from '../../common/speed-keys';
import { expectedValues, HOUR_MS, waitFor } from './speed-support';
import { freePort } from '../../infra/proc';

const MIN = 60_000;

export interface OwnRedis {
  port: number;
  url: string;
  dir: string;
  start(): Promise<void>;
  /** SIGKILL: what was not fsynced yet is lost, as in a crash. */
  kill(): Promise<void>;
  /** Copy of the AOF as it is on disk now (everything written more than a second ago, nothing being rewritten). */
  copyAof(): Promise<string>;
  /** Replace the AOF with a copy (Redis must be down). `null`: no AOF at all, Redis starts empty. */
  restoreAof(copy: string | null): void;
  close(): Promise<void>;
}

export async function ownRedis(): Promise<OwnRedis> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'speed-redis-loss-'));
  const aof = path.join(dir, 'appendonlydir');
  let child: ChildProcess | null = null;
  let copies = 0;
  const probe = async <T>(fn: (r: Redis) => Promise<T>): Promise<T> => {
    const r = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      return await fn(r);
    } finally {
      r.disconnect();
    }
  };
  const self: OwnRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    async start() {
      const c = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no', '--protected-mode', 'no'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      c.stderr!.on('data', (d: Buffer) => process.stderr.write(`[own redis] ${d}`));
      child = c;
      // Answers PING once it has loaded the AOF (LOADING errors until then).
      await waitFor('own redis to answer', async () => ((await probe((r) => r.ping())) === 'PONG' ? true : undefined), 30_000, 100);
    },
    async kill() {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
    async copyAof() {
      await waitFor(
        'no AOF rewrite in progress',
        async () => {
          const info = await probe((r) => r.info('persistence'));
          return /aof_rewrite_in_progress:0/.test(info) && /aof_rewrite_scheduled:0/.test(info) ? true : undefined;
        },
        30_000,
        100,
      );
      // appendfsync everysec: what was written before now is on disk within a second.
      await new Promise((r) => setTimeout(r, 1500));
      const dest = path.join(dir, `aof-copy-${++copies}`);
      fs.cpSync(aof, dest, { recursive: true });
      return dest;
    },
    restoreAof(copy) {
      if (child) throw new Error('stop redis before replacing its AOF');
      fs.rmSync(aof, { recursive: true, force: true });
      if (copy) fs.cpSync(copy, aof, { recursive: true });
    },
    async close() {
      await self.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await self.start();
  return self;
}

/** Redis holds METRICS.md's exact values over `records` (the speed-kill checks: stats, every count bucket, playback, binge). */
export async function expectExact(redis: Redis, cfg: Config, records: EventRecord[], now: number): Promise<void> {
  const exp = expectedValues(cfg, records, now);
  const stats = await readStats(redis, cfg);
  expect({ events: stats.events, duplicates: stats.duplicates }).toEqual({ events: exp.events, duplicates: exp.duplicates });
  for (const g of ['minute', 'second'] as const) {
    expect((await redis.keys(speedKeys(cfg).glob('cnt', g))).length).toBe(exp.counts[g].size);
    for (const [bucket, fields] of exp.counts[g]) expect({ bucket, fields: await readCountBreakdown(redis, cfg, g, bucket) }).toEqual({ bucket, fields });
  }
  for (const row of await readPlayback(redis, cfg, { from: now - 2 * HOUR_MS, to: now + MIN }, now)) {
    const e = exp.playback.get(row.bucket) ?? { plays: 0, pauses: 0, completes: 0, rebuffers: 0 };
    expect([row.bucket, row.plays, row.pauses, row.completes, row.rebuffers]).toEqual([row.bucket, e.plays, e.pauses, e.completes, e.rebuffers]);
  }
  for (const [day, users] of exp.binge) expect((await readBinge(redis, cfg, day)).users).toEqual([...users].sort());
}
