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
const SCALARS = ['v', 'fs', 'lt', 'lct', 'wo', 'ss', 'sl', 'sn'] as const;
const SLOTS = { m: USER_MINUTE_SLOTS, h: USER_HOUR_SLOTS, d: USER_DAY_SLOTS } as const;

/** What a step writes for one user: the version it read ('' = no hash) and the (field, value) pairs, `v` included. */
export interface UserWrite {
  expect: string;
  fields: string[];
}

/** The fields of a user's hash a batch reads: the scalars, then each touched ring slot once. */
export function userReadFields(u: UserBatch): string[] {
  const fields: string[] = [...SCALARS];
  const slots = new Set<string>();
  for (const m of u.minutes.keys()) slots.add(`m${m % SLOTS.m}`);
  for (const h of u.hours.keys()) slots.add(`h${h % SLOTS.h}`);
  for (const d of u.days) slots.add(`d${d % SLOTS.d}`);
  for (const s of slots) fields.push(s);
  return fields;
}

const num = (s: string | null | undefined): number | null => (s === null || s === undefined || s === '' ? null : Number(s));
const sameDay = (x: number, y: number): boolean => Math.floor(x / BUCKET_MS.day) === Math.floor(y / BUCKET_MS.day);

/**
 * The hash's new fields after a batch, given the values of userReadFields(u) as read (null = absent).
 * Ring slots hold `<index>:<value>…`: one holding an older bucket is reset, one holding a newer bucket means
 * this bucket has left the window (nothing to add).
 */
export function userWrite(u: UserBatch, fields: string[], values: Array<string | null>): UserWrite {
  const state = new Map<string, string | null>();
  fields.forEach((f, i) => state.set(f, values[i] ?? null));
  const out = new Map<string, string>();
  const slotAdd = (kind: keyof typeof SLOTS, idx: number, incs: number[]): void => {
    const field = `${kind}${idx % SLOTS[kind]}`;
    const cur = state.get(field);
    let vals: number[] = [];
    if (cur) {
      const parts = cur.split(':').map(Number);
      if (parts[0] > idx) return;
      if (parts[0] === idx) vals = parts;
    }
    let value = String(idx);
    for (let j = 0; j < incs.length; j++) value += `:${(vals[j + 1] ?? 0) + incs[j]}`;
    state.set(field, value);
    out.set(field, value);
  };

  // The interval an earlier batch left open ends at this batch's first playback event.
  let extraHour: number | null = null;
  let extra = 0;
  if (u.watchFirst !== null) {
    const wo = num(state.get('wo'));
    if (wo !== null && u.watchFirst >= wo) {
      extra = Math.min(u.watchFirst - wo, WATCH_INTERVAL_CAP_MS);
      extraHour = Math.floor(u.watchFirst / BUCKET_MS.hour);
    }
    out.set('wo', u.watchOpen === null ? '' : String(u.watchOpen));
  }
  for (const [m, [events, plays]] of u.minutes) slotAdd('m', m, [events, plays]);
  for (const [h, [events, plays, watch]] of u.hours) slotAdd('h', h, [events, plays, h === extraHour ? watch + extra : watch]);
  for (const d of u.days) slotAdd('d', d, []);

  const fs = num(state.get('fs'));
  const lt = num(state.get('lt'));
  const lct = num(state.get('lct'));
  if (fs === null || u.firstTs < fs) out.set('fs', String(u.firstTs));
  if (lt === null || u.lastTs > lt) out.set('lt', String(u.lastTs));
  if (u.lastContent !== null && (lct === null || u.lastContent.ts >= lct)) {
    out.set('lct', String(u.lastContent.ts));
    out.set('lc', u.lastContent.contentId);
  }

  // The current session: a run continues it (30-minute gap, same day), starts a new one, or is an older one (left).
  let ss = num(state.get('ss'));
  let sl = num(state.get('sl'));
  let sn = num(state.get('sn')) ?? 0;
  let sd: string | null = null;
  for (const r of u.runs) {
    if (ss === null || sl === null) {
      [ss, sl, sn, sd] = [r.start, r.end, r.events, r.deviceType];
    } else if (r.end < ss) {
      if (ss - r.end <= SESSION_GAP_MS && sameDay(r.end, ss)) [ss, sn, sd] = [r.start, sn + r.events, r.deviceType];
    } else if (r.start > sl) {
      if (r.start - sl <= SESSION_GAP_MS && sameDay(r.start, sl)) [sl, sn] = [r.end, sn + r.events];
      else [ss, sl, sn, sd] = [r.start, r.end, r.events, r.deviceType];
    } else {
      if (r.start < ss) [ss, sd] = [r.start, r.deviceType];
      if (r.end > sl) sl = r.end;
      sn += r.events;
    }
  }
  if (u.runs.length > 0 && ss !== null && sl !== null) {
    out.set('ss', String(ss));
    out.set('sl', String(sl));
    out.set('sn', String(sn));
    if (sd !== null) out.set('sd', sd);
  }

  const expect = state.get('v') ?? '';
  out.set('v', String((num(expect) ?? 0) + 1));
  const flat: string[] = [];
  for (const [f, v] of out) flat.push(f, v);
  return { expect, fields: flat };
}

/** What a step writes for users that have no hash yet: userWrite of an empty read (for plans built without Redis). */
export function newUserWrites(users: Map<string, UserBatch>): Map<string, UserWrite> {
  const out = new Map<string, UserWrite>();
  for (const [user, u] of users) out.set(user, userWrite(u, userReadFields(u), []));
  return out;
}
