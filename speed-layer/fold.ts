/**
 * The in-memory fold of one consumed batch: raw events in, aggregates out.
 * Pure (no I/O, `now` passed in), so the Redis step only receives aggregates and
 * the rules here are unit-tested without a stack.
 */
import { ALL, BUCKET_MS, bucketStart, type EventRecord } from '../common/contract';
import { countField, countFields, LIVE_SESSIONS_WINDOW_MS, LIVE_USERS_WINDOW_MS, PLAYBACK_FIELDS, type HllGranularity } from '../common/speed-keys';

export interface FoldInput {
  record: EventRecord;
  /** eventIdHash(record.event_id). */
  hash: string;
}

export interface FoldOptions {
  now: number;
  secondRetentionMs: number;
  retentionMs: number;
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
  /** minute bucket → hashes of the event_ids counted (for the cross-batch dedupe). */
  dedupe: Map<number, string[]>;
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

function child<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) {
    v = make();
    m.set(k, v);
  }
  return v;
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
  };
}

/** Whether an event of this ts is older than the family's retention (its bucket would already have expired). */
export function isLate(ts: number, unit: 'second' | 'minute', retentionMs: number, now: number): boolean {
  return bucketStart(ts, unit) + BUCKET_MS[unit] + retentionMs <= now;
}

/** Fold events in order; the first occurrence of an event_id wins. */
export function foldEvents(inputs: Iterable<FoldInput>, opts: FoldOptions): Fold {
  const f = emptyFold();
  const seen = new Set<string>();
  const liveUsersFrom = opts.now - LIVE_USERS_WINDOW_MS;
  const liveSessionsFrom = opts.now - LIVE_SESSIONS_WINDOW_MS;
  const combos = { second: new Map<number, Map<string, number>>(), minute: new Map<number, Map<string, number>>() };
  for (const { record: e, hash } of inputs) {
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
    child(f.dedupe, minute, () => []).push(hash);
    // Count each event once under its own combination; the 8 roll-ups are expanded per combination below.
    const combo = countField(e.event_type, e.device_type, e.country);
    inc(child(combos.minute, minute, () => new Map<string, number>()), combo);
    if (isLate(e.ts, 'second', opts.secondRetentionMs, opts.now)) {
      f.lateSecond += 1;
    } else {
      inc(child(combos.second, bucketStart(e.ts, 'second'), () => new Map<string, number>()), combo);
    }
    for (const g of ['minute', 'hour', 'day'] as const) {
      const byDevice = child(f.users[g], bucketStart(e.ts, g), () => new Map<string, Set<string>>());
      child(byDevice, ALL, () => new Set<string>()).add(e.user_id);
      child(byDevice, e.device_type, () => new Set<string>()).add(e.user_id);
    }
    const pb = PLAYBACK_FIELDS[e.event_type as keyof typeof PLAYBACK_FIELDS];
    if (pb !== undefined) {
      const counters = child(f.playback, minute, () => ({}) as Partial<Record<PlaybackName, number>>);
      counters[pb] = (counters[pb] ?? 0) + 1;
    }
    if (e.event_type === 'video_play' && e.content_id !== null) {
      inc(child(f.topContent, bucketStart(e.ts, 'hour'), () => new Map<string, number>()), e.content_id);
    }
    if (e.event_type === 'video_complete') {
      child(f.completes, e.user_id, () => []).push({ ts: e.ts, hash });
    }
    if (e.ts >= liveUsersFrom && e.ts > (f.liveUsers.get(e.user_id) ?? -Infinity)) f.liveUsers.set(e.user_id, e.ts);
    if (e.session_id !== null && e.ts >= liveSessionsFrom && e.ts > (f.liveSessions.get(e.session_id) ?? -Infinity)) {
      f.liveSessions.set(e.session_id, e.ts);
    }
  }
  for (const g of ['second', 'minute'] as const) {
    for (const [bucket, byCombo] of combos[g]) {
      const counts = new Map<string, number>();
      f.counts[g].set(bucket, counts);
      for (const [combo, n] of byCombo) {
        // event_type and country never contain '|' (countField), so the device is what lies between the first and last.
        const a = combo.indexOf('|');
        const b = combo.lastIndexOf('|');
        for (const field of countFields(combo.slice(0, a), combo.slice(a + 1, b), combo.slice(b + 1))) inc(counts, field, n);
      }
    }
  }
  return f;
}
