/**
 * SIGKILL the speed layer mid-stream (a real child process: `speed-layer/main.ts`
 * pointed at isolated topics and key prefix), start it again, twice: the final
 * Redis state still equals the exact values — nothing lost, nothing counted twice.
 */
import type { ChildProcess } from 'node:child_process';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { readBinge, readCountBreakdown, readOffsets, readPlayback, readStats, speedKeys } from '../../common/speed-keys';
import { isolatedConfig } from '../support/isolated';
import { expectedValues, produce, simulatedRecords, spawnSpeedLayer, sum, toMessages, waitAllApplied, waitFor, HOUR_MS } from './speed-support';

const MIN = 60_000;

function startChild(cfg: Config): ChildProcess {
  // Small fetches: hundreds of batches, so the kill lands mid-stream.
  return spawnSpeedLayer(cfg, { SPEED_MAX_BYTES_PER_PARTITION: '8192' });
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((r) => child.once('exit', (code, signal) => r(signal ?? code)));
}

describe('speed layer: SIGKILL mid-stream and restart', () => {
  let cfg: Config;
  let redis: Redis;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-kill');
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    redis?.disconnect();
  });

  it('final counts are exact after two kill -9 and restarts', async () => {
    const now = Date.now();
    const records = simulatedRecords(cfg, { seed: 23, users: 400, windowMs: 90 * MIN, now, duplicateFraction: 0.08 });
    const total = records.length;
    expect(total).toBeGreaterThan(3000);
    await produce(cfg, toMessages(records));

    const killedAt: number[] = [];
    for (let round = 0; round < 2; round++) {
      const child = startChild(cfg);
      children.push(child);
      const before = sum(await readOffsets(redis, cfg));
      // Kill as soon as this run has applied something, while the rest is still unapplied.
      const progress = await waitFor(
        `run ${round + 1} to apply some batches`,
        async () => {
          if (child.exitCode !== null) throw new Error(`speed layer exited with ${child.exitCode}`);
          const applied = sum(await readOffsets(redis, cfg));
          return applied > before ? applied : undefined;
        },
        60_000,
        20,
      );
      child.kill('SIGKILL');
      expect(await exited(child)).toBe('SIGKILL');
      killedAt.push(progress);
      expect(progress).toBeLessThan(total);
    }
    expect(killedAt[1]).toBeGreaterThan(killedAt[0]);

    const last = startChild(cfg);
    children.push(last);
    await waitAllApplied(redis, cfg, 80_000);
    last.kill('SIGTERM');
    expect(await exited(last)).toBe(0);

    const exp = expectedValues(cfg, records, now);
    const stats = await readStats(redis, cfg);
    expect({ events: stats.events, duplicates: stats.duplicates }).toEqual({ events: exp.events, duplicates: exp.duplicates });
    for (const g of ['minute', 'second'] as const) {
      expect((await redis.keys(speedKeys(cfg).glob('cnt', g))).length).toBe(exp.counts[g].size);
      for (const [bucket, fields] of exp.counts[g]) expect(await readCountBreakdown(redis, cfg, g, bucket)).toEqual(fields);
    }
    for (const row of await readPlayback(redis, cfg, { from: now - 2 * HOUR_MS, to: now + MIN }, now)) {
      const e = exp.playback.get(row.bucket) ?? { plays: 0, pauses: 0, completes: 0, rebuffers: 0 };
      expect([row.plays, row.pauses, row.completes, row.rebuffers]).toEqual([e.plays, e.pauses, e.completes, e.rebuffers]);
    }
    for (const [day, users] of exp.binge) expect((await readBinge(redis, cfg, day)).users).toEqual([...users].sort());
  });
});
