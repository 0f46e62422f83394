/**
 * Each user's feature hash is computed by the consumer (speed-layer/user-state.ts) from the fields it reads,
 * and written by the step's op U (apply.lua) only if the hash's version is still the one read. Before, Redis
 * computed it in Lua (test/integration/fixtures/user-op-in-redis.lua, kept only for this comparison). Random
 * per-user batches go through the real RedisApplier on one prefix and through the old op on another, on the
 * stack's Redis. Every user's hash (fields and values, the version `v` aside, and expiry) must be the same
 * after every step. The batches mix out-of-order minutes, ring wrap-around, slots holding a newer bucket,
 * plays left open across batches, sessions before, after and across the stored one, and midnight. A replayed
 * step is refused whole; a hash that moved between the read and the step (erasure) refuses it as 'stale'.
 */
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import type { Config } from '../../common/config';
import { BUCKET_MS, SESSION_GAP_MS, type EventRecord, type EventType } from '../../common/contract';
import { speedKeys, USER_DAY_SLOTS, USER_HOUR_SLOTS, USER_MINUTE_SLOTS, WATCH_INTERVAL_CAP_MS } from '../../common/speed-keys';
import { RedisApplier, type ApplyRequest } from '../../speed-layer/apply';
import { eventIdHash, foldEvents, type Fold, type UserBatch } from '../../speed-layer/fold';
import { prng } from '../support/prng';
import { dropIsolated, isolatedConfig } from '../support/isolated';

const MIN = BUCKET_MS.minute;
const HOUR = BUCKET_MS.hour;
const DAY = BUCKET_MS.day;
const BEFORE = [
  `local USER_SLOTS = { m = ${USER_MINUTE_SLOTS}, h = ${USER_HOUR_SLOTS}, d = ${USER_DAY_SLOTS} }`,
  `local WATCH_INTERVAL_CAP_MS = ${WATCH_INTERVAL_CAP_MS}`,
  `local SESSION_GAP_MS = ${SESSION_GAP_MS}`,
  readFileSync(new URL('./fixtures/user-op-in-redis.lua', import.meta.url), 'utf8'),
].join('\n');

/** A user's batch packed for the old op, as apply.ts packed it (numbers, -1 = none; strings, lengths among the numbers). */
function packBefore(u: UserBatch): [string, string] {
  const strings = [u.lastContent?.contentId ?? '', ...u.runs.map((r) => r.deviceType)];
  const nums: number[] = [u.firstTs, u.lastTs, u.lastContent?.ts ?? -1, u.watchFirst ?? -1, u.watchOpen ?? -1, u.minutes.size, u.hours.size, u.days.size, u.runs.length];
  for (const str of strings) nums.push(Buffer.byteLength(str));
  for (const [m, [events, plays]] of u.minutes) nums.push(m, events, plays);
  for (const [h, [events, plays, watch]] of u.hours) nums.push(h, events, plays, watch);
  for (const d of u.days) nums.push(d);
  for (const r of u.runs) nums.push(r.start, r.end, r.events);
  return [nums.join(','), strings.join('')];
}
// Playback events weigh most: they open and close the watch intervals.
const TYPES: EventType[] = ['video_play', 'video_play', 'video_pause', 'video_resume', 'video_stop', 'video_complete', 'page_view', 'click', 'search'];
const DEVICES = ['ios', 'android', 'smart_tv'];
// Long enough for the day ring (28 slots) to wrap inside the retention.
const RETENTION_MS = 90 * DAY;
const T0 = Date.UTC(2026, 8, 1);
const NOW = T0 + 80 * DAY;

describe('the user feature hash computed by the consumer, against the Lua op it replaced', () => {
  let cfg: Config;
  let before: Config;
  let redis: Redis;

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-user-op', { SPEED_RETENTION_MS: String(RETENTION_MS) });
    before = await isolatedConfig('speed-user-op-before', { SPEED_RETENTION_MS: String(RETENTION_MS) });
    redis = redisClient(cfg);
  });
  afterAll(async () => {
    if (!redis) return;
    await dropIsolated(cfg, redis);
    await dropIsolated(before, redis);
    redis.disconnect();
  });

  /** The hash as sorted (field, value) pairs, its version aside, and its absolute expiry. */
  async function snapshot(key: string): Promise<{ fields: string[][]; expireAt: number }> {
    const flat = (await redis.call('HGETALL', key)) as string[];
    const fields: string[][] = [];
    for (let i = 0; i < flat.length; i += 2) if (flat[i] !== 'v') fields.push([flat[i], flat[i + 1]]);
    fields.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    return { fields, expireAt: Number(await redis.call('PEXPIRETIME', key)) };
  }

  /** The old op over the fold's users, on the `before` prefix. */
  async function runBefore(fold: Fold): Promise<void> {
    const userKeys: string[] = [];
    const args: string[] = [String(NOW + RETENTION_MS)];
    for (const [user, u] of fold.userFeatures) {
      userKeys.push(speedKeys(before).userFeatures(user));
      args.push(...packBefore(u));
    }
    expect(await redis.eval(BEFORE, userKeys.length, ...userKeys, ...args)).toBe('ok');
  }

  it.each([1, 2, 3])('gives every user the same hash and expiry after every step (seed %i)', async (seed) => {
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    const users = Array.from({ length: 40 }, (_, i) => `s${seed}-user-${i}`);
    // Each user's clock moves on, jumps back or far ahead between batches.
    const cursor = new Map(users.map((u) => [u, T0 + Math.floor(rnd() * 2 * DAY)]));
    const applier = new RedisApplier(redis, cfg);
    const keys = speedKeys(cfg);
    let offset = 0;
    let n = 0;
    const moves = [
      () => Math.floor(rnd() * 20 * MIN), // the same session
      () => SESSION_GAP_MS + Math.floor(rnd() * 60 * MIN), // a new session
      () => -Math.floor(rnd() * 3 * HOUR), // out of order: older minutes, often behind a newer slot
      () => -Math.floor(rnd() * 40 * MIN), // back into the stored session
      () => HOUR + Math.floor(rnd() * 2 * HOUR), // the minute ring wraps
      () => DAY + Math.floor(rnd() * 6 * HOUR), // the hour ring wraps
      () => USER_DAY_SLOTS * DAY + Math.floor(rnd() * 2 * DAY), // the day ring wraps
      () => (Math.floor(rnd() * 3) - 1) * 10 * MIN, // around the same minutes
    ];
    for (let step = 0; step < 25; step++) {
      const records: EventRecord[] = [];
      for (const user of users) {
        if (rnd() < 0.3) continue;
        let at = cursor.get(user)! + pick(moves)();
        // Sometimes just before midnight, so the batch's runs split at the day boundary.
        if (rnd() < 0.1) at = Math.floor(at / DAY) * DAY + DAY - Math.floor(rnd() * 20 * MIN);
        at = Math.min(Math.max(at, T0), NOW - 3 * HOUR);
        cursor.set(user, at);
        // A batch spans a few minutes, or hours (several runs, a wrapped minute ring within the batch).
        const spread = rnd() < 0.25 ? 3 * HOUR : 15 * MIN;
        const count = 1 + Math.floor(rnd() * 8);
        for (let e = 0; e < count; e++) {
          const type = pick(TYPES);
          const video = type.startsWith('video_');
          records.push({
            event_id: `s${seed}-${n++}`,
            event_type: type,
            user_id: user,
            session_id: null,
            ts: at + Math.floor(rnd() * spread),
            schema_version: 1,
            device_type: pick(DEVICES),
            country: 'FR',
            app_version: '1.0.0',
            content_id: video || rnd() < 0.2 ? `movie_${Math.floor(rnd() * 5)}` : null,
            received_at: NOW,
            properties: null,
            context: null,
            extra: null,
          });
        }
      }
      const fold = foldEvents(
        records.map((r) => ({ record: r, hash: eventIdHash(r.event_id) })),
        { now: NOW, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: RETENTION_MS },
      );
      expect(fold.events).toBe(records.length);
      const req: ApplyRequest = {
        topic: cfg.kafka.rawTopic,
        partition: seed, // each seed its own offsets
        firstOffset: offset,
        nextOffset: offset + records.length,
        now: NOW,
        fold,
        binges: [],
        unparseable: 0,
        crossBatchDuplicates: 0,
        freshnessMs: null,
      };
      offset = req.nextOffset;
      const versions = await Promise.all([...fold.userFeatures.keys()].map((u) => redis.hget(keys.userFeatures(u), 'v')));
      expect(await applier.apply(req)).toEqual({ status: 'applied' });
      await runBefore(fold);
      // Each written user's version moved by one.
      const moved = await Promise.all([...fold.userFeatures.keys()].map((u) => redis.hget(keys.userFeatures(u), 'v')));
      expect(moved).toEqual(versions.map((v) => String(Number(v ?? 0) + 1)));

      const touched = [...fold.userFeatures.keys()];
      const after = await Promise.all(touched.map((u) => snapshot(keys.userFeatures(u))));
      const was = await Promise.all(touched.map((u) => snapshot(speedKeys(before).userFeatures(u))));
      touched.forEach((u, i) => expect({ step, user: u, ...after[i] }).toEqual({ step, user: u, ...was[i] }));
      expect(after.every((s) => s.fields.length > 0 && s.expireAt === NOW + RETENTION_MS)).toBe(true);

      // The same step again is refused whole: no user's hash moves.
      if (step % 8 === 7) {
        expect(await applier.apply(req)).toEqual({ status: 'skipped', stored: req.nextOffset });
        expect(await Promise.all(touched.map((u) => snapshot(keys.userFeatures(u))))).toEqual(after);
      }
    }
    // The batches did reach the cases named above: wrapped rings hold slots of several ages, sessions moved.
    const all = await Promise.all(users.map((u) => snapshot(keys.userFeatures(u))));
    const dayFields = all.flatMap((s) => s.fields.filter(([f]) => /^d\d+$/.test(f)));
    expect(dayFields.some(([f, v]) => Number(v) % USER_DAY_SLOTS !== Number(f.slice(1)))).toBe(false);
    expect(Math.max(...dayFields.map(([, v]) => Number(v))) - Math.min(...dayFields.map(([, v]) => Number(v)))).toBeGreaterThanOrEqual(USER_DAY_SLOTS);
    expect(all.some((s) => s.fields.some(([f, v]) => f === 'wo' && v !== ''))).toBe(true);
  });
  it("refuses a step whose user hash moved after the read ('stale'), and the erased state does not come back", async () => {
    const applier = new RedisApplier(redis, cfg);
    const keys = speedKeys(cfg);
    const user = 'stale-user';
    const rec = (i: number, ts: number, type: EventType): EventRecord => ({
      event_id: `stale-${i}`, event_type: type, user_id: user, session_id: null, ts, schema_version: 1, device_type: 'ios', country: 'FR',
      app_version: '1.0.0', content_id: type.startsWith('video_') ? 'movie_1' : null, received_at: NOW, properties: null, context: null, extra: null,
    });
    const request = (records: EventRecord[], firstOffset: number): ApplyRequest => ({
      topic: cfg.kafka.rawTopic, partition: 99, firstOffset, nextOffset: firstOffset + records.length, now: NOW, binges: [], unparseable: 0,
      crossBatchDuplicates: 0, freshnessMs: null,
      fold: foldEvents(records.map((r) => ({ record: r, hash: eventIdHash(r.event_id) })), { now: NOW, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: RETENTION_MS }),
    });
    const t1 = NOW - 5 * HOUR;
    const t2 = NOW - 2 * HOUR;
    const first = request([rec(1, t1, 'video_play'), rec(2, t1 + MIN, 'click')], 0);
    expect(await applier.apply(first)).toEqual({ status: 'applied' });
    const second = request([rec(3, t2, 'page_view'), rec(4, t2 + MIN, 'video_play')], 2);
    const users = await applier.readUsers(second.fold);
    // Erased (batch-layer/erasure) between the consumer's read and its step.
    expect(await redis.del(keys.userFeatures(user))).toBe(1);
    const offsets = await redis.hgetall(keys.offsets(cfg.kafka.rawTopic));
    expect(await applier.apply({ ...second, users })).toEqual({ status: 'stale' });
    // Nothing written: not the hash, not the offset.
    expect(await redis.exists(keys.userFeatures(user))).toBe(0);
    expect(await redis.hgetall(keys.offsets(cfg.kafka.rawTopic))).toEqual(offsets);
    // Read and computed again: only the second batch's events, none of the erased ones.
    expect(await applier.apply(second)).toEqual({ status: 'applied' });
    const h = await redis.hgetall(keys.userFeatures(user));
    expect(h.fs).toBe(String(t2));
    expect(h.v).toBe('1');
    expect(Object.keys(h).filter((f) => /^[mh]\d+$/.test(f)).sort()).toEqual(
      [`m${Math.floor(t2 / MIN) % USER_MINUTE_SLOTS}`, `m${Math.floor((t2 + MIN) / MIN) % USER_MINUTE_SLOTS}`, `h${Math.floor(t2 / HOUR) % USER_HOUR_SLOTS}`].sort(),
    );
  });
});
