/**
 * The one atomic Redis step per batch. A generic Lua script runs a list of
 * operations built here from the fold, guarded by the partition's stored
 * offset (exactly-once effects) and by the cross-batch event_id dedupe.
 *
 * Key names come from common/speed-keys.ts and travel in KEYS, so the script
 * never re-derives them.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import type { Config } from '../common/config';
import { BINGE_WINDOW_MS, bucketStart, type EventRecord } from '../common/contract';
import {
  BINGE_STREAM_MAXLEN,
  expiresAt,
  LIVE_SESSIONS_WINDOW_MS,
  LIVE_USERS_WINDOW_MS,
  readCompletes,
  speedKeys,
  type SpeedKeys,
} from '../common/speed-keys';
import { bingeDays } from './binge';
import { dedupeEpoch, type Fold } from './fold';
import { userReadFields, userWrite, type UserWrite } from './user-state';

/**
 * The step's script and its ARGV protocol (codes, replies): apply.lua, beside this file, read once at
 * startup. The stream's bound is prepended from common/speed-keys.ts, its one definition.
 */
const lua = (file: string): string => readFileSync(fileURLToPath(new URL(file, import.meta.url)), 'utf8');
const SCRIPT = [`local BINGE_STREAM_MAXLEN = ${BINGE_STREAM_MAXLEN}`, lua('./apply.lua')].join('\n');
/** The read-only check before the fold (RedisApplier.seenBefore): seen-before.lua, beside this file. */
const SEEN_BEFORE = lua('./seen-before.lua');

export type ApplyResult =
  | { status: 'applied' }
  | { status: 'skipped'; stored: number }
  | { status: 'partial'; stored: number }
  /** Redis' stored offset is below the step's first offset: it lost applied steps. Nothing written. */
  | { status: 'gap'; stored: number }
  /** No stored offset for the partition and the step was not allowed to set one. Nothing written. */
  | { status: 'missing' }
  | { status: 'duplicates'; hashes: string[] }
  /** A user's feature hash moved since it was read (UserWrites): nothing written; read and compute again. */
  | { status: 'stale' };

export interface BingeDetection {
  userId: string;
  day: string;
  /** ts of the third complete. */
  ts: number;
}

export interface ApplyRequest {
  topic: string;
  partition: number;
  /** Offset of the first message the fold covers, and the one after its last. */
  firstOffset: number;
  nextOffset: number;
  /**
   * 'init': the partition may have no stored offset yet (nothing before firstOffset exists in Kafka, or
   * the group never consumed it); a number: the stored offset the step may apply over although it is
   * below firstOffset (Kafka no longer holds the messages in between). Otherwise both are refused.
   */
  accept?: 'init' | number;
  now: number;
  fold: Fold;
  binges: BingeDetection[];
  /** Messages of the batch that could not be read as an EventRecord. */
  unparseable: number;
  /** Duplicates found against earlier batches (added to the fold's in-batch ones). */
  crossBatchDuplicates: number;
  /** max(now − received_at) over the batch, or null when it had no events. */
  freshnessMs: number | null;
  /** What the step writes to each user of fold.userFeatures (RedisApplier.readUsers); read by apply() when absent. */
  users?: Map<string, UserWrite>;
}

/** Builds the KEYS/ARGV of one script call, and measures them. */
class Plan {
  readonly keys: string[] = [];
  readonly args: Array<string | Buffer> = [];
  bytes = 0;
  private readonly index = new Map<string, number>();

  key(name: string): number {
    let i = this.index.get(name);
    if (i === undefined) {
      this.keys.push(name);
      this.bytes += Buffer.byteLength(name);
      i = this.keys.length;
      this.index.set(name, i);
    }
    return i;
  }

  arg(a: string | number | Buffer): void {
    const v = typeof a === 'number' ? String(a) : a;
    this.args.push(v);
    this.bytes += typeof v === 'string' ? Buffer.byteLength(v) : v.length;
  }

  op(code: string, key: string, expireAt: number, args: Array<string | number | Buffer>): void {
    if (args.length === 0) return;
    this.arg(code);
    this.arg(this.key(key));
    this.arg(expireAt);
    this.arg(args.length);
    for (const a of args) this.arg(a);
  }
}

function pairs<K, V>(m: Map<K, V>, fmt: (k: K, v: V) => Array<string | number>): Array<string | number> {
  const out: Array<string | number> = [];
  for (const [k, v] of m) out.push(...fmt(k, v));
  return out;
}

export interface BuiltPlan {
  keys: string[];
  args: Array<string | Buffer>;
  /** The dedupe hashes in the order the script indexes them. */
  dedupeHashes: string[];
  /** Bytes of keys and args together. */
  bytes: number;
}

export function buildPlan(cfg: Config, keys: SpeedKeys, req: ApplyRequest): BuiltPlan {
  const { fold, now } = req;
  const plan = new Plan();
  plan.key(keys.offsets(req.topic)); // KEYS[1]
  for (const a of [req.partition, req.firstOffset, req.nextOffset, req.accept ?? '']) plan.arg(a);

  const dedupeHashes: string[] = [];
  const W = cfg.speed.dedupeWindowMs;
  for (const [epoch, hashes] of fold.dedupe) {
    const packed = Buffer.from(hashes.join(''), 'hex');
    // Checked against its arrival epoch's set and the previous one's, so copies that arrive within W of
    // each other always meet; a set lives until the next epoch is over (epoch + 2W).
    const previous = plan.key(keys.dedupe(epoch - W));
    plan.op('D', keys.dedupe(epoch), Math.max(now, epoch + W) + W, [dedupeHashes.length, packed, previous, cfg.speed.dedupeMaxIds]);
    // Not push(...hashes): an epoch can hold more hashes than a call may take arguments.
    for (const h of hashes) dedupeHashes.push(h);
  }
  for (const g of ['second', 'minute'] as const) {
    for (const [bucket, fields] of fold.counts[g]) {
      plan.op('I', keys.counts(g, bucket), expiresAt(cfg, g, bucket), pairs(fields, (f, n) => [f, n]));
    }
  }
  for (const g of ['minute', 'hour', 'day'] as const) {
    for (const [bucket, byDevice] of fold.users[g]) {
      for (const [device, users] of byDevice) plan.op('P', keys.hll(g, bucket, device), expiresAt(cfg, g, bucket), [...users]);
    }
  }
  for (const [minute, counters] of fold.playback) {
    plan.op('I', keys.playback(minute), expiresAt(cfg, 'minute', minute), Object.entries(counters).flat() as Array<string | number>);
  }
  for (const [hour, plays] of fold.topContent) {
    plan.op('Z', keys.topContent(hour), expiresAt(cfg, 'hour', hour), pairs(plays, (c, n) => [c, n]));
  }
  if (fold.liveUsers.size > 0) {
    plan.op('G', keys.liveUsers(), now + LIVE_USERS_WINDOW_MS, pairs(fold.liveUsers, (u, ts) => [ts, u]));
  }
  plan.op('T', keys.liveUsers(), 0, [now - LIVE_USERS_WINDOW_MS]);
  if (fold.liveSessions.size > 0) {
    plan.op('G', keys.liveSessions(), now + LIVE_SESSIONS_WINDOW_MS, pairs(fold.liveSessions, (s, ts) => [ts, s]));
  }
  plan.op('T', keys.liveSessions(), 0, [now - LIVE_SESSIONS_WINDOW_MS]);

  const historyTtl = cfg.speed.retentionMs + BINGE_WINDOW_MS;
  for (const [user, completes] of fold.completes) {
    const key = keys.bingeCompletes(user);
    plan.op('G', key, now + historyTtl, completes.flatMap((c) => [c.ts, c.hash]));
    plan.op('T', key, 0, [now - historyTtl]);
  }
  const byDay = new Map<string, BingeDetection[]>();
  for (const b of req.binges) child(byDay, b.day).push(b);
  for (const [day, list] of byDay) {
    const dayStart = Date.parse(`${day}T00:00:00Z`);
    plan.op('B', keys.bingeDay(day), expiresAt(cfg, 'day', dayStart), [plan.key(keys.bingeStream()), ...list.flatMap((b) => [b.userId, b.day, b.ts])]);
  }

  // One op for the batch's users, in the same step as everything else: a replayed batch is refused whole.
  // Per user: their key's index, the version read, and the (field, value) pairs computed (speed-layer/user-state.ts).
  if (fold.userFeatures.size > 0) {
    if (req.users === undefined) throw new Error('buildPlan: the fold has user features but the request has no user writes (RedisApplier.readUsers)');
    const userArgs: Array<string | number> = [];
    for (const user of fold.userFeatures.keys()) {
      const w = req.users.get(user);
      if (w === undefined) throw new Error(`buildPlan: no user write for a user of the fold`);
      userArgs.push(plan.key(keys.userFeatures(user)), w.expect, w.fields.length);
      for (const f of w.fields) userArgs.push(f);
    }
    const first = keys.userFeatures(fold.userFeatures.keys().next().value as string);
    plan.op('U', first, now + cfg.speed.retentionMs, userArgs);
  }

  const stats: Array<string | number> = ['batches', 1];
  const add = (field: string, n: number): void => {
    if (n > 0) stats.push(field, n);
  };
  add('events', fold.events);
  add('duplicates', fold.duplicates + req.crossBatchDuplicates);
  add('late_minute', fold.lateMinute);
  add('late_second', fold.lateSecond);
  add('unparseable', req.unparseable);
  plan.op('I', keys.stats(), 0, stats);
  if (req.freshnessMs !== null) plan.op('W', keys.freshness(), 0, ['last_ms', req.freshnessMs, 'at', now]);

  return { keys: plan.keys, args: plan.args, dedupeHashes, bytes: plan.bytes };
}

function child<K, V>(m: Map<K, V[]>, k: K): V[] {
  let v = m.get(k);
  if (!v) m.set(k, (v = []));
  return v;
}

/**
 * Binge detections the batch's completes produce, given each user's recent
 * completes already in Redis. Days whose set would already have expired are left out.
 */
export async function detectBinges(redis: Redis, cfg: Config, fold: Fold, now: number): Promise<BingeDetection[]> {
  if (fold.completes.size === 0) return [];
  const users = [...fold.completes.keys()];
  const ranges = users.map((userId) => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const c of fold.completes.get(userId)!) {
      lo = Math.min(lo, c.ts);
      hi = Math.max(hi, c.ts);
    }
    return { userId, from: lo - BINGE_WINDOW_MS, to: hi + BINGE_WINDOW_MS };
  });
  const remembered = await readCompletes(redis, cfg, ranges);
  const out: BingeDetection[] = [];
  users.forEach((userId, i) => {
    const byHash = remembered[i];
    const fresh = fold.completes.get(userId)!;
    for (const c of fresh) byHash.set(c.hash, c.ts);
    for (const [day, ts] of bingeDays([...byHash.values()])) {
      // A binge whose window holds none of this step's completes was found when its own completes were applied:
      // leaving it out keeps a step's binge operations within 2 days per complete (the fold's reserve).
      if (!fresh.some((c) => c.ts <= ts && ts - c.ts <= BINGE_WINDOW_MS)) continue;
      if (expiresAt(cfg, 'day', bucketStart(ts, 'day')) > now) out.push({ userId, day, ts });
    }
  });
  return out;
}


export class RedisApplier {
  /** Script source → its SHA once loaded. */
  private readonly shas = new Map<string, string>();
  readonly keys: SpeedKeys;

  constructor(
    private readonly redis: Redis,
    private readonly cfg: Config,
  ) {
    this.keys = speedKeys(cfg);
  }

  /** Size of the last step sent (for the step-size metrics). */
  lastStep: { keys: number; args: number; bytes: number } = { keys: 0, args: 0, bytes: 0 };
  /** Ids the last applied step counted but could not remember: their arrival epoch's set was full (SPEED_DEDUPE_MAX_IDS). */
  lastUnremembered = 0;

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    if (req.users === undefined && req.fold.userFeatures.size > 0) req = { ...req, users: await this.readUsers(req.fold) };
    const plan = buildPlan(this.cfg, this.keys, req);
    this.lastStep = { keys: plan.keys.length, args: plan.args.length, bytes: plan.bytes };
    const raw = (await this.run(SCRIPT, plan.keys, plan.args)) as Array<string | number>;
    const status = raw[0];
    if (status === 'applied') {
      this.lastUnremembered = Number(raw[1] ?? 0);
      return { status };
    }
    if (status === 'skipped' || status === 'partial' || status === 'gap') return { status, stored: Number(raw[1]) };
    if (status === 'missing' || status === 'stale') return { status };
    if (status === 'duplicates') return { status, hashes: raw.slice(1).map((i) => plan.dedupeHashes[Number(i)]) };
    throw new Error(`unexpected reply from the apply script: ${JSON.stringify(raw)}`);
  }

  /**
   * The hashes of `inputs` already in their arrival epoch's dedupe set or the previous one's: one read-only
   * round trip before the fold. Without it, nearly every live batch carries some copy of an event applied in an
   * earlier batch, so its whole step was folded, planned, sent and parsed twice (the step's own check answering
   * 'duplicates'). The step still checks (another partition may apply a copy in between); that is now rare.
   */
  async seenBefore(inputs: Iterable<{ record: EventRecord; hash: string }>): Promise<Set<string>> {
    const W = this.cfg.speed.dedupeWindowMs;
    const byEpoch = new Map<number, string[]>();
    for (const { record, hash } of inputs) child(byEpoch, dedupeEpoch(record, W)).push(hash);
    if (byEpoch.size === 0) return new Set();
    const keys: string[] = [];
    const args: Buffer[] = [];
    const order: string[] = [];
    for (const [epoch, hashes] of byEpoch) {
      keys.push(this.keys.dedupe(epoch), this.keys.dedupe(epoch - W));
      args.push(Buffer.from(hashes.join(''), 'hex'));
      for (const h of hashes) order.push(h);
    }
    const found = (await this.run(SEEN_BEFORE, keys, args)) as number[];
    return new Set(found.map((i) => order[i]));
  }

  /**
   * Each user's fields the fold touches, read in one pipelined round trip (an HMGET per user: no script, so
   * Redis spends no Lua time on it), and what the step will write for them. Read before every attempt of a step:
   * a step refused as 'stale' is computed again from a fresh read.
   */
  async readUsers(fold: Fold): Promise<Map<string, UserWrite>> {
    const out = new Map<string, UserWrite>();
    if (fold.userFeatures.size === 0) return out;
    const users = [...fold.userFeatures];
    const fields = users.map(([, u]) => userReadFields(u));
    const pipeline = this.redis.pipeline();
    users.forEach(([user], i) => pipeline.hmget(this.keys.userFeatures(user), ...fields[i]));
    const replies = (await pipeline.exec()) ?? [];
    users.forEach(([user, u], i) => {
      const [err, values] = replies[i] ?? [new Error('no reply')];
      if (err) throw err;
      out.set(user, userWrite(u, fields[i], values as Array<string | null>));
    });
    return out;
  }

  private async run(script: string, keys: string[], args: Array<string | Buffer>): Promise<unknown> {
    let sha = this.shas.get(script) ?? ((await this.redis.script('LOAD', script)) as string);
    this.shas.set(script, sha);
    // One array argument, never spread: ioredis flattens it (Command's args.flat()), while spreading
    // tens of thousands of values onto the call stack throws "Maximum call stack size exceeded".
    const keysAndArgs = (keys as Array<string | Buffer>).concat(args);
    try {
      return await this.redis.evalsha(sha, keys.length, keysAndArgs);
    } catch (err) {
      // A Redis restart (or SCRIPT FLUSH) forgets loaded scripts.
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      sha = (await this.redis.script('LOAD', script)) as string;
      this.shas.set(script, sha);
      return this.redis.evalsha(sha, keys.length, keysAndArgs);
    }
  }
}
