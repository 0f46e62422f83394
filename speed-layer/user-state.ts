/**
 * One user's feature hash (common/speed-keys.ts, "User features"), advanced in the consumer: the step's
 * read round trip fetches the fields a batch touches (readUserFields), userWrite computes what changes, and
 * the step writes it with one HSET per user (apply.lua, op U) after checking the hash's version `v` is the one
 * read. Redis' Lua interpreter did this arithmetic before, at about 35 µs per user and step, twice Redis' CPU
 * for the rest of the step (docs/benchmarks.md, "The per-user feature op in Redis").
 *
 * A user's events share a partition (the Kafka key is user_id) and a partition's steps apply in order, so the
 * read is normally current; the version check covers what is not: a hash erased in between
 * (batch-layer/erasure), a user whose events reach two partitions (a partition count change, a foreign
 * producer), a zombie member. A step whose versions moved writes nothing and is read and computed again.
 */
import { BUCKET_MS, SESSION_GAP_MS } from '../common/contract';
import { USER_DAY_SLOTS, USER_HOUR_SLOTS, USER_MINUTE_SLOTS, WATCH_INTERVAL_CAP_MS } from '../common/speed-keys';
import type { UserBatch } from './fold';

/** The version field and the scalars the computation reads, in this order, before the touched slots. */
export const USER_SCALARS = ['v', 'fs', 'lt', 'lct', 'wo', 'ss', 'sl', 'sn'] as const;
const SLOTS = { m: USER_MINUTE_SLOTS, h: USER_HOUR_SLOTS, d: USER_DAY_SLOTS } as const;

/** What a step writes for one user: the version it read ('' = no hash) and the (field, value) pairs, `v` included. */
export interface UserWrite {
  expect: string;
  fields: string[];
}

/** The ring slot holding bucket `idx` of a kind (m, h, d): its field in the hash. */
function slotField(kind: keyof typeof SLOTS, idx: number): string {
  return `${kind}${idx % SLOTS[kind]}`;
}

/** The fields of a user's hash a batch reads: the scalars, then each touched ring slot once. */
export function userReadFields(u: UserBatch): string[] {
  const fields: string[] = [...USER_SCALARS];
  const slots = new Set<string>();
  for (const m of u.minutes.keys()) slots.add(slotField('m', m));
  for (const h of u.hours.keys()) slots.add(slotField('h', h));
  for (const d of u.days) slots.add(slotField('d', d));
  for (const s of slots) fields.push(s);
  return fields;
}

function num(s: string | null | undefined): number | null {
  return s === null || s === undefined || s === '' ? null : Number(s);
}

function sameDay(x: number, y: number): boolean {
  return Math.floor(x / BUCKET_MS.day) === Math.floor(y / BUCKET_MS.day);
}

/**
 * Add `n` counters (a, b, c) to a ring slot of `slots` (field → value, as read and as changed so far) and note
 * the field in `written`. A slot holding an older bucket is reset; one holding a newer bucket means this bucket
 * has left the window (nothing to add). Plain arguments, no closures: this runs per user and slot on every step.
 */
function slotAdd(slots: Map<string, string | null>, written: string[], field: string, idx: number, n: number, a: number, b: number, c: number): void {
  const cur = slots.get(field);
  let value: string;
  if (cur) {
    const parts = cur.split(':');
    const stored = Number(parts[0]);
    if (stored > idx) return;
    if (stored === idx) {
      value = String(idx);
      if (n > 0) value += `:${Number(parts[1] ?? 0) + a}`;
      if (n > 1) value += `:${Number(parts[2] ?? 0) + b}`;
      if (n > 2) value += `:${Number(parts[3] ?? 0) + c}`;
    }
  }
  value ??= n === 0 ? String(idx) : n === 2 ? `${idx}:${a}:${b}` : `${idx}:${a}:${b}:${c}`;
  slots.set(field, value);
  if (!written.includes(field)) written.push(field);
}

/**
 * The hash's new fields after a batch, given the values of userReadFields(u) as read (null = absent):
 * the version read and the (field, value) pairs that change, the version + 1 among them.
 */
export function userWrite(u: UserBatch, fields: string[], values: Array<string | null>): UserWrite {
  const scalars = USER_SCALARS.length;
  const slots = new Map<string, string | null>();
  for (let i = scalars; i < fields.length; i++) slots.set(fields[i], values[i] ?? null);
  const [v, fsRead, ltRead, lctRead, woRead, ssRead, slRead, snRead] = values;
  const out: string[] = [];

  // The interval an earlier batch left open ends at this batch's first playback event.
  let extraHour: number | null = null;
  let extra = 0;
  if (u.watchFirst !== null) {
    const wo = num(woRead);
    if (wo !== null && u.watchFirst >= wo) {
      extra = Math.min(u.watchFirst - wo, WATCH_INTERVAL_CAP_MS);
      extraHour = Math.floor(u.watchFirst / BUCKET_MS.hour);
    }
    const wo2 = u.watchOpen === null ? '' : String(u.watchOpen);
    if (wo2 !== woRead) out.push('wo', wo2);
  }
  const written: string[] = [];
  for (const [m, [events, plays]] of u.minutes) slotAdd(slots, written, slotField('m', m), m, 2, events, plays, 0);
  for (const [h, [events, plays, watch]] of u.hours) slotAdd(slots, written, slotField('h', h), h, 3, events, plays, h === extraHour ? watch + extra : watch);
  for (const d of u.days) slotAdd(slots, written, slotField('d', d), d, 0, 0, 0, 0);
  // Only what changed: a day already marked is not written again.
  for (const f of written) {
    const value = slots.get(f) as string;
    if (value !== values[fields.indexOf(f)]) out.push(f, value);
  }

  const fs = num(fsRead);
  const lt = num(ltRead);
  const lct = num(lctRead);
  if (fs === null || u.firstTs < fs) out.push('fs', String(u.firstTs));
  if (lt === null || u.lastTs > lt) out.push('lt', String(u.lastTs));
  if (u.lastContent !== null && (lct === null || u.lastContent.ts >= lct)) {
    if (u.lastContent.ts !== lct) out.push('lct', String(u.lastContent.ts));
    out.push('lc', u.lastContent.contentId); // not read: written whenever it may have changed
  }

  // The current session: a run continues it (30-minute gap, same day), starts a new one, or is an older one (left).
  let ss = num(ssRead);
  let sl = num(slRead);
  let sn = num(snRead) ?? 0;
  let sd: string | null = null;
  for (const r of u.runs) {
    if (ss === null || sl === null) {
      ss = r.start;
      sl = r.end;
      sn = r.events;
      sd = r.deviceType;
    } else if (r.end < ss) {
      if (ss - r.end <= SESSION_GAP_MS && sameDay(r.end, ss)) {
        ss = r.start;
        sn += r.events;
        sd = r.deviceType;
      }
    } else if (r.start > sl) {
      if (r.start - sl <= SESSION_GAP_MS && sameDay(r.start, sl)) {
        sl = r.end;
        sn += r.events;
      } else {
        ss = r.start;
        sl = r.end;
        sn = r.events;
        sd = r.deviceType;
      }
    } else {
      if (r.start < ss) {
        ss = r.start;
        sd = r.deviceType;
      }
      if (r.end > sl) sl = r.end;
      sn += r.events;
    }
  }
  if (u.runs.length > 0 && ss !== null && sl !== null) {
    if (ss !== num(ssRead)) out.push('ss', String(ss));
    if (sl !== num(slRead)) out.push('sl', String(sl));
    if (String(sn) !== snRead) out.push('sn', String(sn));
    if (sd !== null) out.push('sd', sd); // not read: set with every new session start
  }

  const expect = v ?? '';
  out.push('v', String((num(expect) ?? 0) + 1));
  return { expect, fields: out };
}

/** What a step writes for users that have no hash yet: userWrite of an empty read (for plans built without Redis). */
export function newUserWrites(users: Map<string, UserBatch>): Map<string, UserWrite> {
  const out = new Map<string, UserWrite>();
  for (const [user, u] of users) out.set(user, userWrite(u, userReadFields(u), []));
  return out;
}
