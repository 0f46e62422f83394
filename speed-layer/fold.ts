/**
 * The in-memory fold of one consumed batch: raw events in, aggregates out.
 * Pure (no I/O, `now` passed in), so the Redis step only receives aggregates and
 * the rules here are unit-tested without a stack.
 */
import { ALL, BINGE_WINDOW_MS, BUCKET_MS, bucketStart, dayOf, SESSION_GAP_MS, type EventRecord } from '../common/contract';
import {
  countField,
  countFields,
  LIVE_SESSIONS_WINDOW_MS,
  LIVE_USERS_WINDOW_MS,
  parseCountField,
  PLAYBACK_FIELDS,
  WATCH_CLOSE,
  WATCH_INTERVAL_CAP_MS,
  WATCH_OPEN,
  type HllGranularity,
} from '../common/speed-keys';

export interface FoldInput {
  record: EventRecord;
  /** eventIdHash(record.event_id). */
  hash: string;
}

export interface FoldOptions {
  now: number;
  secondRetentionMs: number;
  retentionMs: number;
  /**
   * Bounds of the Redis step the fold becomes: the fold stops before the first
   * event that could push the step's plan past any of them (it always takes at
   * least one event). Without limits every input is folded.
   */
  limits?: StepLimits;
  /** Bytes of the Redis key prefix (every key of the step carries it); counted against limits.maxBytes. */
  keyPrefixBytes?: number;
  /**
   * Length of the arrival-time epochs the cross-batch dedupe sets are keyed by (the dedupe window,
   * SPEED_DEDUPE_WINDOW_MS; default 5 min). An event is checked against its epoch's set and the one before.
   */
  dedupeEpochMs?: number;
  /** Keep the per-user feature state (SPEED_USER_FEATURES; default true): off, the step writes no `{usr}` hash. */
  userFeatures?: boolean;
}

export const DEFAULT_DEDUPE_EPOCH_MS = 5 * 60_000;

/**
 * The arrival-time epoch an event's id is remembered under: by when the collector received it, not by
 * its event time, so a copy re-sent with another timestamp (an SDK that restamps on retry) still meets
 * the first one. Records without received_at (foreign producers) fall back to their event time.
 */
export function dedupeEpoch(e: EventRecord, epochMs: number): number {
  const arrival = typeof e.received_at === 'number' && e.received_at > 0 ? e.received_at : e.ts;
  return Math.floor(arrival / epochMs) * epochMs;
}

/** What one Redis step may carry at most. */
export interface StepLimits {
  /** ARGV entries of the script call. */
  maxArgs: number;
  /** KEYS of the script call. */
  maxKeys: number;
  /** Bytes of KEYS and ARGV together. */
  maxBytes: number;
}

/** Size of a step: an upper bound of the plan buildPlan makes from the fold (apply.ts). */
export interface StepCost {
  args: number;
  keys: number;
  bytes: number;
}

type PlaybackName = (typeof PLAYBACK_FIELDS)[keyof typeof PLAYBACK_FIELDS];

export interface Fold {
  /** Distinct events inside the retention (what the counters grew by). */
  events: number;
  /** Events whose event_id already appeared earlier in the same batch. */
  duplicates: number;
  /** Older than the retention: counted nowhere, left to the batch layer. */
  lateMinute: number;
  /** Inside the retention but too old for the per-second family. */
  lateSecond: number;
  /** bucket → count field → n. */
  counts: { second: Map<number, Map<string, number>>; minute: Map<number, Map<string, number>> };
  /** bucket → device_type or ALL → users. */
  users: Record<HllGranularity, Map<number, Map<string, Set<string>>>>;
  /** minute bucket → playback counters (only the non-zero ones). */
  playback: Map<number, Partial<Record<PlaybackName, number>>>;
  /** hour bucket → content_id → plays. */
  topContent: Map<number, Map<string, number>>;
  /** user → latest ts, only users inside the live window. */
  liveUsers: Map<string, number>;
  /** session_id → latest ts, only sessions inside the live window. */
  liveSessions: Map<string, number>;
  /** user → their video_complete events of this batch. */
  completes: Map<string, Array<{ ts: number; hash: string }>>;
  /** arrival-time epoch (see dedupeEpoch) → hashes of the event_ids counted (for the cross-batch dedupe). */
  dedupe: Map<number, string[]>;
  /** user → what the batch adds to their feature state (METRICS.md "User features"). */
  userFeatures: Map<string, UserBatch>;
  /** How many inputs were folded: all of them, or the prefix that fits opts.limits. */
  consumed: number;
  /** Upper bound of the step's plan size (see StepCost). */
  cost: StepCost;
}

/**
 * One user's events of a batch, summarised in (ts, event_id) order for their feature hash (speed-layer/user-state.ts):
 * bucket indexes are floor(ts / unit). What depends on the state already in Redis (the play left open by an
 * earlier batch, the session it may continue) is left to userWrite, which reads it: watchFirst and the first run.
 */
export interface UserBatch {
  firstTs: number;
  lastTs: number;
  lastContent: { ts: number; contentId: string } | null;
  /** ts of the first play/resume/pause/stop/complete: it closes the interval an earlier batch left open. Null: no such event. */
  watchFirst: number | null;
  /** ts of the play or resume the batch leaves open; null when its last playback event closed it. */
  watchOpen: number | null;
  /** minute index → [events, plays]. */
  minutes: Map<number, [number, number]>;
  /** hour index → [events, plays, watch ms of the intervals closed in the hour]. */
  hours: Map<number, [number, number, number]>;
  days: Set<number>;
  /**
   * Sessions of the batch's events by METRICS.md's rule (30-minute gap, split at midnight): the first (it may
   * continue the session in Redis) and, when there are more, the last (every run after the first starts a new session).
   */
  runs: Array<{ start: number; end: number; events: number; deviceType: string }>;
}

/** Summarise one user's events of a batch (any order; duplicates already removed). */
export function userBatch(events: EventRecord[]): UserBatch {
  const sorted = [...events].sort((a, b) => a.ts - b.ts || (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0));
  const u: UserBatch = {
    firstTs: sorted[0].ts,
    lastTs: sorted[sorted.length - 1].ts,
    lastContent: null,
    watchFirst: null,
    watchOpen: null,
    minutes: new Map(),
    hours: new Map(),
    days: new Set(),
    runs: [],
  };
  for (const e of sorted) {
    const play = e.event_type === 'video_play' ? 1 : 0;
    const minute = Math.floor(e.ts / BUCKET_MS.minute);
    const hour = Math.floor(e.ts / BUCKET_MS.hour);
    const day = Math.floor(e.ts / BUCKET_MS.day);
    const m = u.minutes.get(minute) ?? [0, 0];
    u.minutes.set(minute, [m[0] + 1, m[1] + play]);
    const h = u.hours.get(hour) ?? [0, 0, 0];
    h[0] += 1;
    h[1] += play;
    u.hours.set(hour, h);
    u.days.add(day);
    if (e.content_id !== null) u.lastContent = { ts: e.ts, contentId: e.content_id };
    const open = WATCH_OPEN.has(e.event_type);
    if (open || WATCH_CLOSE.has(e.event_type)) {
      if (u.watchFirst === null) u.watchFirst = e.ts;
      else if (u.watchOpen !== null) h[2] += Math.min(e.ts - u.watchOpen, WATCH_INTERVAL_CAP_MS);
      u.watchOpen = open ? e.ts : null;
    }
    const run = u.runs[u.runs.length - 1];
    if (run !== undefined && e.ts - run.end <= SESSION_GAP_MS && Math.floor(run.end / BUCKET_MS.day) === day) {
      run.end = e.ts;
      run.events += 1;
    } else {
      u.runs.push({ start: e.ts, end: e.ts, events: 1, deviceType: e.device_type });
    }
  }
  if (u.runs.length > 2) u.runs = [u.runs[0], u.runs[u.runs.length - 1]];
  return u;
}

/**
 * 64-bit hash of an event_id as 16 hex chars: two 32-bit multiplicative hashes
 * with different seeds and a final avalanche. Not cryptographic; a collision
 * would drop a distinct event as a duplicate, and at 6 M events per minute set
 * the chance is about n²/2⁶⁵ ≈ 10⁻⁶ per minute.
 */
export function eventIdHash(id: string): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  a = avalanche(a ^ id.length);
  b = avalanche(b ^ Math.imul(a, 0x27d4eb2f));
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

function avalanche(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function inc<K>(m: Map<K, number>, k: K, by = 1): void {
  m.set(k, (m.get(k) ?? 0) + by);
}

export function emptyFold(): Fold {
  return {
    events: 0,
    duplicates: 0,
    lateMinute: 0,
    lateSecond: 0,
    counts: { second: new Map(), minute: new Map() },
    users: { minute: new Map(), hour: new Map(), day: new Map() },
    playback: new Map(),
    topContent: new Map(),
    liveUsers: new Map(),
    liveSessions: new Map(),
    completes: new Map(),
    dedupe: new Map(),
    userFeatures: new Map(),
    consumed: 0,
    cost: { args: 0, keys: 0, bytes: 0 },
  };
}

/*
 * The step's cost model, mirroring buildPlan (apply.ts): every key once in KEYS;
 * ARGV = 4 leading values, then per operation a 4-value header and its arguments.
 * Byte figures are upper bounds: a decimal number (ts, count, expiry, index) is at
 * most 20 bytes, an operation header 32, a key at most KEY_BYTES plus the prefix
 * plus its variable part (device, user).
 */
const NUM_BYTES = 20;
const HEADER_ARGS = 4;
const HEADER_BYTES = 32;
const KEY_BYTES = 48;
const utf8 = (s: string | null): number => (s === null ? 0 : Buffer.byteLength(s));

/** The fixed part of every step: offsets key and the 4 leading args, stats, freshness, the live zsets' trims and adds, the binge stream key. */
export function baseStepCost(keyPrefixBytes = 0): StepCost {
  const keys = 6;
  const args = 4 + (HEADER_ARGS + 12) + (HEADER_ARGS + 4) + 2 * (HEADER_ARGS + 1) + 2 * HEADER_ARGS;
  return { keys, args, bytes: keys * (KEY_BYTES + keyPrefixBytes) + args * NUM_BYTES };
}

/**
 * A user's arguments in the users' op (apply.ts, speed-layer/user-state.ts) besides their ring slots: key index,
 * version read, count, then up to 10 scalar (field, value) pairs (v, fs, lt, lct, lc, wo, ss, sl, sn, sd).
 */
const USER_OP_ARGS = 3 + 2 * 10;
/** Their bytes besides the strings (lc, sd): 3 numbers, 8 numeric values, 10 field names of ≤ 3 bytes. */
const USER_OP_FIXED_BYTES = 11 * NUM_BYTES + 30;
/** A ring slot's (field, value): a field of ≤ 3 bytes, then the bucket index and up to 3 numbers joined by ':'. */
const USER_SLOT_BYTES = { minute: 3 + 3 * (NUM_BYTES + 1), hour: 3 + 4 * (NUM_BYTES + 1), day: 3 + NUM_BYTES } as const;

/*
 * Most one event can add to a step (see the per-family accounting in foldEvents):
 * dedupe 12 (its epoch's key and the previous one's, 4 values), counts 2 × (4 + 8 × 2), users 6 × (4 + 1), playback 6, top content 6,
 * live users and sessions 2 + 2, completes 11 plus a binge reserve of 2 days × (4 + 1 + 3),
 * the users' op 4 (its header, once) + USER_OP_ARGS per user + 2 per ring slot (3 slots).
 */
const EVENT_MAX_ARGS = 12 + 40 + 30 + 6 + 6 + 4 + 11 + 16 + 4 + USER_OP_ARGS + 6;
const EVENT_MAX_KEYS = 2 + 2 + 6 + 1 + 1 + 1 + 2 + 1;

function eventMaxBytes(e: EventRecord, keyPrefixBytes: number): number {
  const strings = utf8(e.user_id) + utf8(e.session_id) + utf8(e.content_id) + utf8(e.device_type) + utf8(e.country) + utf8(e.event_type);
  // Each string appears at most 22 times (the device in 16 count fields and 6 HyperLogLog keys), twice more in the user
  // op (its key, last content and session devices), which also adds a key, a header, its scalars and three ring slots.
  const userOp = USER_OP_FIXED_BYTES + USER_SLOT_BYTES.minute + USER_SLOT_BYTES.hour + USER_SLOT_BYTES.day;
  return 2304 + KEY_BYTES + HEADER_BYTES + userOp + 24 * strings + EVENT_MAX_KEYS * keyPrefixBytes;
}

function exceeds(c: StepCost, l: StepLimits, args: number, keys: number, bytes: number): boolean {
  return c.args + args > l.maxArgs || c.keys + keys > l.maxKeys || c.bytes + bytes > l.maxBytes;
}

/** Whether an event of this ts is older than the family's retention (its bucket would already have expired). */
export function isLate(ts: number, unit: 'second' | 'minute', retentionMs: number, now: number): boolean {
  return bucketStart(ts, unit) + BUCKET_MS[unit] + retentionMs <= now;
}

/** Fold events in order; the first occurrence of an event_id wins. */
export function foldEvents(inputs: Iterable<FoldInput>, opts: FoldOptions): Fold {
  const f = emptyFold();
  const prefixBytes = opts.keyPrefixBytes ?? 0;
  const cost = (f.cost = baseStepCost(prefixBytes));
  const limits = opts.limits;
  const keyBytes = KEY_BYTES + prefixBytes;
  const epochMs = opts.dedupeEpochMs ?? DEFAULT_DEDUPE_EPOCH_MS;
  const userFeatures = opts.userFeatures ?? true;
  const newKey = (variableBytes = 0): void => {
    cost.keys += 1;
    cost.args += HEADER_ARGS;
    cost.bytes += keyBytes + variableBytes + HEADER_BYTES;
  };
  const arg = (bytes: number): void => {
    cost.args += 1;
    cost.bytes += bytes;
  };
  const seen = new Set<string>();
  const byUser = new Map<string, { events: EventRecord[]; buckets: Set<string> }>();
  const bingeDays = new Set<string>();
  const bingeUserDays = new Set<string>();
  const liveUsersFrom = opts.now - LIVE_USERS_WINDOW_MS;
  const liveSessionsFrom = opts.now - LIVE_SESSIONS_WINDOW_MS;
  const combos = { second: new Map<number, Map<string, number>>(), minute: new Map<number, Map<string, number>>() };
  // Distinct count fields per bucket, for the cost only (the counts themselves are expanded per combination below).
  const fieldsOf = { second: new Map<number, Set<string>>(), minute: new Map<number, Set<string>>() };
  const count = (g: 'second' | 'minute', bucket: number, combo: string, e: EventRecord): void => {
    let byCombo = combos[g].get(bucket);
    if (byCombo === undefined) {
      combos[g].set(bucket, (byCombo = new Map()));
      fieldsOf[g].set(bucket, new Set());
      newKey();
    }
    const n = byCombo.get(combo);
    byCombo.set(combo, (n ?? 0) + 1);
    if (n !== undefined) return;
    const fields = fieldsOf[g].get(bucket)!;
    for (const field of countFields(e.event_type, e.device_type, e.country)) {
      if (fields.has(field)) continue;
      fields.add(field);
      cost.args += 2;
      cost.bytes += utf8(field) + NUM_BYTES;
    }
  };
  for (const { record: e, hash } of inputs) {
    if (limits !== undefined && f.consumed > 0 && exceeds(cost, limits, EVENT_MAX_ARGS, EVENT_MAX_KEYS, eventMaxBytes(e, prefixBytes))) break;
    f.consumed += 1;
    if (seen.has(hash)) {
      f.duplicates += 1;
      continue;
    }
    seen.add(hash);
    if (isLate(e.ts, 'minute', opts.retentionMs, opts.now)) {
      f.lateMinute += 1;
      continue;
    }
    f.events += 1;
    const minute = bucketStart(e.ts, 'minute');
    const epoch = dedupeEpoch(e, epochMs);
    let hashes = f.dedupe.get(epoch);
    if (hashes === undefined) {
      f.dedupe.set(epoch, (hashes = []));
      newKey();
      newKey(); // the previous epoch's set, checked too (an upper bound: two epochs may share it)
      arg(NUM_BYTES);
      arg(0);
      arg(NUM_BYTES);
      arg(NUM_BYTES); // the set's bound (SPEED_DEDUPE_MAX_IDS)
    }
    hashes.push(hash);
    cost.bytes += 8;
    // Count each event once under its own combination; the 8 roll-ups are expanded per combination below.
    const combo = countField(e.event_type, e.device_type, e.country);
    count('minute', minute, combo, e);
    if (isLate(e.ts, 'second', opts.secondRetentionMs, opts.now)) {
      f.lateSecond += 1;
    } else {
      count('second', bucketStart(e.ts, 'second'), combo, e);
    }
    for (const g of ['minute', 'hour', 'day'] as const) {
      const bucket = bucketStart(e.ts, g);
      let byDevice = f.users[g].get(bucket);
      if (byDevice === undefined) f.users[g].set(bucket, (byDevice = new Map<string, Set<string>>()));
      for (const device of [ALL, e.device_type]) {
        let users = byDevice.get(device);
        if (users === undefined) {
          byDevice.set(device, (users = new Set<string>()));
          newKey(utf8(device));
        }
        if (!users.has(e.user_id)) {
          users.add(e.user_id);
          arg(utf8(e.user_id));
        }
      }
    }
    const pb = PLAYBACK_FIELDS[e.event_type as keyof typeof PLAYBACK_FIELDS];
    if (pb !== undefined) {
      let counters = f.playback.get(minute);
      if (counters === undefined) {
        f.playback.set(minute, (counters = {}));
        newKey();
      }
      if (counters[pb] === undefined) {
        cost.args += 2;
        cost.bytes += 10 + NUM_BYTES;
      }
      counters[pb] = (counters[pb] ?? 0) + 1;
    }
    if (e.event_type === 'video_play' && e.content_id !== null) {
      const hour = bucketStart(e.ts, 'hour');
      let plays = f.topContent.get(hour);
      if (plays === undefined) {
        f.topContent.set(hour, (plays = new Map<string, number>()));
        newKey();
      }
      if (!plays.has(e.content_id)) {
        cost.args += 2;
        cost.bytes += utf8(e.content_id) + NUM_BYTES;
      }
      inc(plays, e.content_id);
    }
    if (e.event_type === 'video_complete') {
      let completes = f.completes.get(e.user_id);
      if (completes === undefined) {
        f.completes.set(e.user_id, (completes = []));
        newKey(utf8(e.user_id)); // ZADD GT
        cost.args += HEADER_ARGS + 1; // the trim
        cost.bytes += HEADER_BYTES + NUM_BYTES;
      }
      completes.push({ ts: e.ts, hash });
      cost.args += 2;
      cost.bytes += NUM_BYTES + 16;
      // Binge reserve: a complete can only make its user binge on the day it falls on or the day its
      // window reaches into (detectBinges keeps no other): one (user, day, ts) per user and day, one key per day.
      for (const day of new Set([dayOf(e.ts), dayOf(e.ts + BINGE_WINDOW_MS)])) {
        if (!bingeDays.has(day)) {
          bingeDays.add(day);
          newKey();
          arg(NUM_BYTES);
        }
        const userDay = `${e.user_id}|${day}`;
        if (!bingeUserDays.has(userDay)) {
          bingeUserDays.add(userDay);
          cost.args += 3;
          cost.bytes += utf8(e.user_id) + 10 + NUM_BYTES;
        }
      }
    }
    if (userFeatures) {
      let mine = byUser.get(e.user_id);
      if (mine === undefined) {
        if (byUser.size === 0) {
          cost.args += HEADER_ARGS;
          cost.bytes += HEADER_BYTES;
        }
        byUser.set(e.user_id, (mine = { events: [], buckets: new Set() }));
        cost.keys += 1;
        cost.bytes += keyBytes + Math.ceil((utf8(e.user_id) * 4) / 3); // base64url in the key
        cost.args += USER_OP_ARGS;
        cost.bytes += USER_OP_FIXED_BYTES;
      }
      mine.events.push(e);
      // A touched minute, hour and day slot, when new: a (field, value) pair each.
      for (const unit of ['minute', 'hour', 'day'] as const) {
        const b = `${unit}${bucketStart(e.ts, unit)}`;
        if (!mine.buckets.has(b)) {
          mine.buckets.add(b);
          cost.args += 2;
          cost.bytes += USER_SLOT_BYTES[unit];
        }
      }
      cost.bytes += utf8(e.device_type) + utf8(e.content_id);
    }
    if (e.ts >= liveUsersFrom && e.ts > (f.liveUsers.get(e.user_id) ?? -Infinity)) {
      if (!f.liveUsers.has(e.user_id)) {
        cost.args += 2;
        cost.bytes += NUM_BYTES + utf8(e.user_id);
      }
      f.liveUsers.set(e.user_id, e.ts);
    }
    if (e.session_id !== null && e.ts >= liveSessionsFrom && e.ts > (f.liveSessions.get(e.session_id) ?? -Infinity)) {
      if (!f.liveSessions.has(e.session_id)) {
        cost.args += 2;
        cost.bytes += NUM_BYTES + utf8(e.session_id);
      }
      f.liveSessions.set(e.session_id, e.ts);
    }
  }
  for (const [user, { events }] of byUser) f.userFeatures.set(user, userBatch(events));
  for (const g of ['second', 'minute'] as const) {
    for (const [bucket, byCombo] of combos[g]) {
      const counts = new Map<string, number>();
      f.counts[g].set(bucket, counts);
      for (const [combo, n] of byCombo) {
        const c = parseCountField(combo);
        for (const field of countFields(c.eventType, c.deviceType, c.country)) inc(counts, field, n);
      }
    }
  }
  return f;
}
