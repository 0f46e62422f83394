/**
 * Erasure of users from the speed layer's Redis keys. The families that hold user ids
 * (common/speed-keys.ts): `{live}:users` (members), `{binge}:day:*` (members),
 * `{binge}:stream` (the `user` field of entries) and `{binge}:completes:<base64url(user_id)>`
 * (the key name), and until the old-form keys expire `{binge}:completes:<user_id>` (see
 * legacyBingeCompletes). The HyperLogLogs hold registers, not ids, but cannot forget a member: their
 * estimates count the users until the keys expire (bucket end + SPEED_RETENTION_MS), and
 * erasure waits that out rather than rebuild them. Nothing else holds a user id: counts,
 * playback and top lists are per bucket and content, dedupe sets hold event-id hashes.
 */
import type { Redis } from 'ioredis';
import type { Config } from '../../common/config';
import { speedKeys } from '../../common/speed-keys';

const STREAM_PAGE = 1000;

/** Removes every trace of the users the speed layer keeps; returns the members, entries and keys removed. Idempotent. */
export async function eraseFromRedis(redis: Redis, cfg: Config, users: readonly string[]): Promise<number> {
  const keys = speedKeys(cfg);
  const wanted = new Set(users);
  let removed = await redis.zrem(keys.liveUsers(), ...users);
  for await (const batch of redis.scanStream({ match: keys.glob('binge', 'day'), count: 500 }) as AsyncIterable<string[]>) {
    for (const key of batch) removed += await redis.srem(key, ...users);
  }
  // The stream is capped (MAXLEN ~ 100k): read it in pages and delete the users' entries by id.
  let start = '-';
  for (;;) {
    const page = await redis.xrange(keys.bingeStream(), start, '+', 'COUNT', STREAM_PAGE);
    const ids: string[] = [];
    for (const [id, fields] of page) {
      for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'user' && wanted.has(fields[i + 1])) ids.push(id);
    }
    if (ids.length > 0) removed += await redis.xdel(keys.bingeStream(), ...ids);
    if (page.length < STREAM_PAGE) break;
    start = `(${page[page.length - 1][0]}`;
  }
  removed += await redis.del(...users.map((u) => keys.bingeCompletes(u)), ...users.map((u) => legacyBingeCompletes(cfg, u)));
  return removed;
}

/**
 * The completes key as the speed layer named it before issue 14: the raw id, unescaped. Nothing
 * writes it any more, but a key written before the upgrade lives up to SPEED_RETENTION_MS + 4 h,
 * and an erasure in that window must not leave the user's completes behind (docs/operations.md,
 * "Upgrade notes"). Private to erasure so that no writer can pick it up again; delete it once no
 * deployment can hold an old-form key. A raw id that is itself the base64url of another id names
 * that user's new key too: it goes as well (the erased id is in its name), which can cost that
 * user a binge in the speed layer; the batch layer's binge_users is exact.
 */
function legacyBingeCompletes(cfg: Config, userId: string): string {
  return `${cfg.redis.keyPrefix}{binge}:completes:${userId}`;
}
