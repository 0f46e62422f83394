/**
 * The erasure's Redis step on real Redis, during the upgrade window of issue 14: a user's
 * completes may sit under `{binge}:completes:<base64url(id)>` and, for up to 52 h more, under the
 * old `{binge}:completes:<id>` (docs/operations.md, "Upgrade notes"). Both go; the other users'
 * keys of both forms stay.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eraseFromRedis } from '../../batch-layer/erasure/redis';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { speedKeys } from '../../common/speed-keys';
import { dropIsolated, isolatedConfig } from '../support/isolated';

const ERASED = ['er-gone', 'er.gone+2@x:y'];
const KEPT = ['er-kept'];
const TS = Date.parse('2025-02-04T12:00:00Z');

let cfg: Config;
let redis: Redis;

/** The old key name, spelled as the speed layer wrote it before issue 14 (raw id). */
const oldForm = (u: string) => `${cfg.redis.keyPrefix}{binge}:completes:${u}`;

beforeAll(async () => {
  cfg = await isolatedConfig('erasure-redis');
  redis = redisClient(cfg);
});

afterAll(async () => {
  if (cfg && redis) await dropIsolated(cfg, redis).catch(() => undefined);
  redis?.disconnect();
});

describe('erasure of a user whose completes span the completes-key upgrade', () => {
  it('deletes the new-form and the old-form completes key, and only the erased users\'', async () => {
    const keys = speedKeys(cfg);
    const p = redis.pipeline();
    for (const [n, u] of [...ERASED, ...KEPT].entries()) {
      p.zadd(keys.bingeCompletes(u), TS + n, `evt-new-${n}`);
      p.zadd(oldForm(u), TS - 3_600_000 + n, `evt-old-${n}`);
      p.pexpire(oldForm(u), 52 * 3_600_000);
      p.zadd(keys.liveUsers(), TS + n, u);
    }
    await p.exec();
    const all = [...ERASED, ...KEPT].flatMap((u) => [keys.bingeCompletes(u), oldForm(u)]);
    expect(await redis.exists(...all)).toBe(all.length);

    const removed = await eraseFromRedis(redis, cfg, ERASED);

    // Two completes keys and one live member per erased user.
    expect(removed).toBe(ERASED.length * 3);
    for (const u of ERASED) expect({ u, exists: await redis.exists(keys.bingeCompletes(u), oldForm(u)) }).toEqual({ u, exists: 0 });
    for (const u of KEPT) {
      expect(await redis.zrange(keys.bingeCompletes(u), '0', '-1')).toEqual([`evt-new-${ERASED.length}`]);
      expect(await redis.zrange(oldForm(u), '0', '-1')).toEqual([`evt-old-${ERASED.length}`]);
    }
    expect(await redis.zrange(keys.liveUsers(), '0', '-1')).toEqual(KEPT);
    // No key name under the prefix holds an erased id any more.
    expect((await redis.keys(keys.glob())).filter((k) => ERASED.some((u) => k.includes(u)))).toEqual([]);

    // Idempotent: a second run finds nothing.
    expect(await eraseFromRedis(redis, cfg, ERASED)).toBe(0);
  });
});
