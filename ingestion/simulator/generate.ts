/**
 * Deterministic generator of Netflix-like clickstream and playback traffic.
 *
 * Same seed + options => the same sends, byte for byte. Each user draws from
 * their own PRNG stream, so the behaviour of user N does not depend on how many
 * other users there are, and the fractions of late / duplicate / invalid sends
 * draw from a separate stream, so changing them never changes the valid events.
 *
 * The window is walked one UTC day at a time; every send is buffered until the
 * day that could still produce an earlier send is done, then emitted in send
 * order. Memory is bounded by roughly one day of traffic.
 *
 * Users skip days (their daily activity chance), some stop for good (churn), and in windows of
 * three weeks or more some take a break of 7 to 12 days and come back: every lifecycle state
 * (new, returning, resurrecting, dormant) and churn risk occur.
 */
import fs from 'node:fs';
import { once } from 'node:events';
import { BINGE_WINDOW_MS, BUCKET_MS, DLQ_REASONS, SESSION_GAP_MS, type DlqReason, type EventType } from '../../common/contract';

export interface SimulationOptions {
  /** Same seed + options => same output, byte for byte. */
  seed: number;
  /** Distinct users; every one of them has at least one event in the window. */
  users: number;
  /** Event-time window start (inclusive). */
  startMs: number;
  /** Event-time window end (exclusive); may span several days. */
  endMs: number;
  /** Fraction of valid events sent out of order, hours after their event time (default 0). */
  lateFraction?: number;
  /** Fraction of valid events sent again with the same event_id and the same bytes (default 0). */
  duplicateFraction?: number;
  /**
   * Extra invalid sends, as a fraction of the valid events (default 0): malformed JSON,
   * not an object, schema violations, unknown schema_version, timestamps out of range.
   */
  invalidFraction?: number;
  /**
   * Fraction of devices whose app sends schema_version 2 (`properties.device {type, os, model}`,
   * `app_id`) instead of version 1 (default 0). Drawn from its own stream, so the events are
   * the same facts whatever the fraction; only their encoding differs.
   */
  v2Fraction?: number;
}

export type SendKind = 'valid' | 'late' | 'duplicate' | 'invalid';

/**
 * What an invalid send should be rejected as: the contract's dead-letter reasons a line earns by
 * its content alone. Not size_violation (it would take a 64 KiB line) nor too_late (it depends
 * on the collector's clock and horizon, not on the line).
 */
export type InvalidReason = Exclude<DlqReason, 'size_violation' | 'too_late'>;
export const INVALID_REASONS: readonly InvalidReason[] = DLQ_REASONS.filter((r): r is InvalidReason => r !== 'size_violation' && r !== 'too_late');

export interface SimulatedSend {
  /** The exact JSON text sent (one NDJSON line, no newline). */
  line: string;
  kind: SendKind;
  /** When the line carries one. */
  eventId?: string;
  /** Event time when known. */
  ts?: number;
  /** Simulated wall-clock time of the send (non-decreasing over the sequence). */
  sendAt: number;
  /** For valid events: how long after its event time the event was first sent (0 unless late). */
  lateByMs?: number;
  /** For invalid sends: the DLQ reason the collector should give. */
  expectedReason?: InvalidReason;
  /** For valid/late/duplicate sends: the user. */
  userId?: string;
}

// ---------------------------------------------------------------------------
// Randomness

/** mulberry32: tiny, fast, good enough for simulation; state is one uint32. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) | 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hiInclusive: number): number {
    return lo + Math.floor(this.next() * (hiInclusive - lo + 1));
  }
  range(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of items) total += w;
    let r = this.next() * total;
    for (const [v, w] of items) {
      r -= w;
      if (r < 0) return v;
    }
    return items[items.length - 1][0];
  }
}

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

// ---------------------------------------------------------------------------
// The world: places, devices, catalogue

const MIN = 60_000;
const HOUR = BUCKET_MS.hour;
const DAY = BUCKET_MS.day;

/** [location, UTC offset in hours, weight]. The last ones have no parseable country. */
const LOCATIONS: readonly (readonly [string | undefined, number, number])[] = [
  ['US-CA-SF', -8, 10], ['US-NY-NYC', -5, 10], ['US-TX-AUS', -6, 6], ['US-WA-SEA', -8, 4],
  ['BR-SP', -3, 8], ['BR-RJ', -3, 4], ['GB-LND', 0, 7], ['GB-MAN', 0, 2], ['DE-BE', 1, 5],
  ['FR-IDF', 1, 4], ['ES-MD', 1, 3], ['IN-MH-MUM', 5.5, 6], ['JP-TYO', 9, 4], ['KR-SEL', 9, 3],
  ['MX-CMX', -6, 4], ['CA-ON-TOR', -5, 3], ['AU-NSW-SYD', 10, 2],
  ['XYZ', 0, 1], ['Unknown', 0, 0.5], ['1A-x', 0, 0.3], [undefined, 0, 1.5],
];

/** Local hour of day → relative chance a session starts then (evening-heavy). */
const HOUR_WEIGHTS = [3, 1.5, 0.7, 0.3, 0.2, 0.2, 0.5, 1.5, 2, 1.5, 1.5, 2, 3, 3, 2, 2, 2.5, 3.5, 5, 7, 9, 10, 8, 5];
const HOURS = HOUR_WEIGHTS.map((w, h) => [h, w] as const);

const DEVICES: readonly (readonly [string, number])[] = [
  ['smart_tv', 30], ['ios', 20], ['android', 22], ['web', 15], ['tablet', 8], ['game_console', 5],
];
const APP_VERSIONS: readonly (readonly [string, number])[] = [
  ['8.41.0', 45], ['8.40.2', 25], ['8.39.1', 15], ['8.38.0', 8], ['7.99.3', 4], ['8.42.0-beta', 3],
];
const USER_AGENTS: Record<string, string> = {
  smart_tv: 'Netflix/%v (SmartTV; Tizen 7.0)',
  ios: 'Netflix/%v (iPhone; iOS 17.4)',
  android: 'Netflix/%v (Linux; Android 14)',
  web: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0',
  tablet: 'Netflix/%v (iPad; iPadOS 17.4)',
  game_console: 'Netflix/%v (PlayStation 5)',
};
/** What a schema_version 2 app says about its device: app_id, device.os and device.model. */
const V2_DEVICE: Record<string, { app: string; os: string; model: string }> = {
  smart_tv: { app: 'tv-app', os: 'tizen', model: 'QE55Q80C' },
  ios: { app: 'ios-app', os: 'ios', model: 'iPhone15,3' },
  android: { app: 'android-app', os: 'android', model: 'Pixel 8' },
  web: { app: 'web-app', os: 'windows', model: 'desktop' },
  tablet: { app: 'ios-app', os: 'ipados', model: 'iPad13,18' },
  game_console: { app: 'console-app', os: 'ps5', model: 'CFI-1216A' },
};
const QUALITY: Record<string, readonly (readonly [string, number])[]> = {
  smart_tv: [['4k', 5], ['hd', 4], ['sd', 1]],
  game_console: [['4k', 4], ['hd', 5], ['sd', 1]],
  web: [['hd', 6], ['sd', 3], ['4k', 1]],
  tablet: [['hd', 7], ['sd', 3]],
  ios: [['hd', 6], ['sd', 4]],
  android: [['hd', 5], ['sd', 5]],
};
const PAGES = ['home', 'browse', 'my_list', 'new_popular', 'title_detail', 'kids', 'categories'];
const CLICK_TARGETS = ['billboard', 'row_tile', 'continue_watching', 'my_list_tile', 'top10_tile', 'trailer', 'genre_row'];
const QUERIES = ['stranger things', 'crown', 'documentary', 'anime', 'comedy', 'korean drama', 'true crime', 'action', 'wednesday', 'cooking'];
const NOTIFICATIONS = ['new_episode', 'continue_watching', 'recommendation', 'top10'];
const INTERRUPTIONS = [['pause', 6], ['rebuffer', 2], ['seek', 2]] as const;
const NAVIGATION = [['click', 5], ['page_view', 3], ['search', 2]] as const;
const MOVIES = 400;
const SHOWS = 120;

interface Device {
  type: string;
  /** Whether this client reports device_type (some old web builds do not). */
  reportsType: boolean;
  appVersion: string | undefined;
  userAgent: string;
  /** The context object as JSON, the same for every event of this user on this device. */
  contextJson?: string;
  /** Whether this device's app sends schema_version 2. */
  v2: boolean;
}

interface User {
  idx: number;
  id: string;
  rng: Rng;
  /** Separate stream for late/duplicate/invalid decisions. */
  noise: Rng;
  joinAt: number;
  isNew: boolean;
  churnAt: number;
  /** A break [breakFrom, breakTo): no sessions, then back (a resurrected user, at churn risk meanwhile). */
  breakFrom: number;
  breakTo: number;
  /** Chance of being active on a given day. */
  activity: number;
  binger: boolean;
  devices: Device[];
  location: string | undefined;
  utcOffset: number;
  ip: string;
  sendsSchemaVersion: boolean;
  /** Earliest start of the next session: > 30 min after the last event. */
  nextFree: number;
  sessions: number;
  installed: boolean;
  /** Show the user is watching through, and the next episode. */
  show: number;
  season: number;
  episode: number;
}

function makeUser(seed: number, idx: number, startMs: number, endMs: number, v2Fraction = 0): User {
  const rng = new Rng(mix(seed, idx));
  // Its own stream: the fraction of version 2 apps changes no other draw.
  const apps = new Rng(mix(seed ^ 0x68e31da4, idx));
  const noise = new Rng(mix(seed ^ 0x5bd1e995, idx));
  const span = endMs - startMs;
  // About 60 % of users already exist at the start; the rest join during the window.
  const isNew = idx !== 0 && rng.chance(0.4);
  const joinAt = isNew ? startMs + Math.floor(rng.next() * span) : startMs;
  const churns = rng.chance(0.2) && endMs - joinAt > 2 * DAY;
  const churnAt = churns ? joinAt + DAY + Math.floor(rng.next() * (endMs - joinAt - DAY)) : Infinity;
  const [location, utcOffset] = rng.weighted(LOCATIONS.map(([l, o, w]) => [[l, o] as const, w] as const));
  const nDevices = rng.weighted([[1, 70], [2, 24], [3, 6]] as const);
  const devices: Device[] = [];
  const userVersion = rng.weighted(APP_VERSIONS);
  for (let i = 0; i < nDevices; i++) {
    const type = rng.weighted(DEVICES);
    const appVersion = type === 'web' ? undefined : i === 0 ? userVersion : rng.weighted(APP_VERSIONS);
    devices.push({
      type,
      reportsType: !(type === 'web' && rng.chance(0.3)) && !rng.chance(0.02),
      appVersion,
      userAgent: USER_AGENTS[type].replace('%v', appVersion ?? ''),
      v2: v2Fraction > 0 && apps.chance(v2Fraction),
    });
  }
  // Breaks need room (three weeks), and draw from their own stream: shorter windows, and every
  // user without a break, get exactly the sends they got before breaks existed.
  const habits = new Rng(mix(seed ^ 0x2545f491, idx));
  let breakFrom = Infinity;
  let breakTo = Infinity;
  if (endMs - joinAt >= 21 * DAY && habits.chance(0.25)) {
    breakFrom = joinAt + 7 * DAY + Math.floor(habits.next() * (endMs - joinAt - 14 * DAY));
    breakTo = breakFrom + habits.int(7, 12) * DAY;
  }
  return {
    idx,
    id: `user_${seed}_${idx}`,
    rng,
    noise,
    joinAt,
    isNew,
    churnAt,
    breakFrom,
    breakTo,
    activity: rng.weighted([[0.9, 25], [0.6, 35], [0.3, 30], [0.1, 10]] as const),
    binger: idx === 0 || rng.chance(0.1),
    devices,
    location,
    utcOffset,
    ip: `10.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`,
    sendsSchemaVersion: !rng.chance(0.15),
    nextFree: joinAt,
    sessions: 0,
    installed: false,
    show: rng.int(1, SHOWS),
    season: rng.int(1, 4),
    episode: 1,
  };
}

// ---------------------------------------------------------------------------
// Events

interface Ev {
  id: string;
  type: EventType;
  user: User;
  session: string;
  ts: number;
  device: Device;
  /** The members of `properties` as JSON text, without braces (allocation-light). */
  props: string;
  /** Serialized once, so a duplicate is the very same bytes. */
  line?: string;
}

// Hand-built JSON (our own strings never need escaping): JSON.stringify of a fresh
// object per event was a third of the generator's time.
function serialize(ev: Ev): string {
  if (ev.line !== undefined) return ev.line;
  const u = ev.user;
  const d = ev.device;
  const sep = ev.props === '' ? '' : ',';
  let props: string;
  let version: string;
  if (d.v2) {
    const v2 = V2_DEVICE[d.type];
    // A client that does not report its type (version 1: no device_type) reports no device.type.
    const device = d.reportsType ? `{"type":"${d.type}","os":"${v2.os}","model":"${v2.model}"}` : `{"os":"${v2.os}","model":"${v2.model}"}`;
    props = `{"device":${device}${sep}${ev.props}}`;
    version = `,"schema_version":2,"app_id":"${v2.app}"`;
  } else {
    props = d.reportsType ? `{"device_type":"${d.type}"${sep}${ev.props}}` : `{${ev.props}}`;
    version = u.sendsSchemaVersion ? ',"schema_version":1' : '';
  }
  d.contextJson ??= JSON.stringify({ location: u.location, user_agent: d.userAgent, ip_address: u.ip, app_version: d.appVersion });
  ev.line = `{"event_id":"${ev.id}","event_type":"${ev.type}","user_id":"${u.id}","session_id":"${ev.session}","timestamp":${ev.ts}${version},"properties":${props},"context":${d.contextJson}}`;
  return ev.line;
}

/** A send waiting for its turn: `ev` for valid/late/duplicate sends, `line` for invalid ones. */
class Pending {
  // A class, so every pending send has one shape and the sort stays monomorphic.
  constructor(
    readonly sendAt: number,
    readonly seq: number,
    readonly kind: SendKind,
    readonly ev: Ev | undefined,
    readonly lateByMs: number | undefined,
    readonly line?: string,
    readonly eventId?: string,
    readonly ts?: number,
    readonly reason?: InvalidReason,
  ) {}
}

/** Far enough in the future to be out of range for any collector clock of this century. */
const FAR_FUTURE = Date.UTC(2100, 0, 1);

function invalidLine(base: string, ev: Ev, reason: InvalidReason, rng: Rng, badId: string): { line: string; eventId?: string; ts?: number } {
  const obj = JSON.parse(base) as Record<string, unknown>;
  obj.event_id = badId;
  const text = () => JSON.stringify(obj);
  switch (reason) {
    case 'malformed_json': {
      const full = text();
      const variant = rng.int(0, 2);
      // A strict prefix of an object never parses: the closing brace is missing.
      if (variant === 0) return { line: full.slice(0, Math.max(1, Math.floor(full.length * rng.range(0.2, 0.95)))), eventId: badId };
      if (variant === 1) return { line: `${full.slice(0, -1)},}`, eventId: badId, ts: ev.ts };
      return { line: full.replace('"event_type"', "'event_type'"), eventId: badId, ts: ev.ts };
    }
    case 'not_an_object': {
      const variant = rng.int(0, 2);
      if (variant === 0) return { line: `[${text()}]` };
      if (variant === 1) return { line: JSON.stringify(badId) };
      return { line: 'null' };
    }
    case 'schema_violation': {
      const variant = rng.int(0, 4);
      if (variant === 0) delete obj.user_id;
      else if (variant === 1) obj.event_type = 'video_rewind';
      else if (variant === 2) obj.user_id = ev.user.idx;
      else if (variant === 3) obj.timestamp = new Date(ev.ts).toISOString();
      else {
        obj.properties = { ...(obj.properties as object), playback_position: 'middle' };
      }
      return { line: text(), eventId: badId, ts: variant === 3 ? undefined : ev.ts };
    }
    case 'unknown_schema_version':
      obj.schema_version = rng.pick([3, 4, 99]);
      return { line: text(), eventId: badId, ts: ev.ts };
    case 'timestamp_out_of_range': {
      const variant = rng.int(0, 2);
      // Seconds instead of milliseconds: a classic client bug, lands in 1970.
      const ts = variant === 0 ? Math.floor(ev.ts / 1000) : variant === 1 ? Date.UTC(1999, 11, 31, 23, 0) : FAR_FUTURE + (ev.ts % DAY);
      obj.timestamp = ts;
      return { line: text(), eventId: badId, ts };
    }
  }
}

// ---------------------------------------------------------------------------

function checkOptions(o: SimulationOptions): void {
  const problems: string[] = [];
  if (!Number.isInteger(o.seed)) problems.push('seed must be an integer');
  if (!Number.isInteger(o.users) || o.users < 1) problems.push('users must be an integer >= 1');
  if (!Number.isFinite(o.startMs) || !Number.isFinite(o.endMs) || o.endMs <= o.startMs) problems.push('endMs must be after startMs');
  for (const k of ['lateFraction', 'duplicateFraction', 'invalidFraction'] as const) {
    const v = o[k];
    if (v !== undefined && !(v >= 0 && v <= 1)) problems.push(`${k} must be within [0, 1]`);
  }
  if (problems.length > 0) throw new RangeError(`invalid simulation options: ${problems.join('; ')}`);
}

/** Every send in send order. Deterministic. */
export function* simulate(opts: SimulationOptions): Generator<SimulatedSend> {
  checkOptions(opts);
  const { seed, startMs, endMs } = opts;
  const lateFraction = opts.lateFraction ?? 0;
  const duplicateFraction = opts.duplicateFraction ?? 0;
  const invalidFraction = opts.invalidFraction ?? 0;

  const users: User[] = [];
  for (let i = 0; i < opts.users; i++) users.push(makeUser(seed, i, startMs, endMs, opts.v2Fraction ?? 0));

  let eventSeq = 0;
  let badSeq = 0;
  let sendSeq = 0;
  let pending: Pending[] = [];

  const push = (u: User, type: EventType, session: string, ts: number, device: Device, props: string): void => {
    if (ts >= endMs) return; // the window cuts the session short
    const ev: Ev = { id: `evt_${seed}_${eventSeq++}`, type, user: u, session, ts, device, props };
    const n = u.noise;
    const late = lateFraction > 0 && n.next() < lateFraction;
    const lateBy = late ? HOUR + Math.floor(n.next() * 11 * HOUR) : 0;
    const firstSend = ts + lateBy;
    pending.push(new Pending(firstSend, sendSeq++, late ? 'late' : 'valid', ev, lateBy));
    if (duplicateFraction > 0 && n.next() < duplicateFraction) {
      // A client retry after a lost response: seconds to two minutes later.
      pending.push(new Pending(firstSend + 500 + Math.floor(n.next() * 2 * MIN), sendSeq++, 'duplicate', ev, lateBy));
    }
    if (invalidFraction > 0 && n.next() < invalidFraction) {
      const reason = INVALID_REASONS[badSeq % INVALID_REASONS.length];
      const bad = invalidLine(serialize(ev), ev, reason, n, `evt_${seed}_bad${badSeq++}`);
      pending.push(new Pending(firstSend + 1, sendSeq++, 'invalid', undefined, undefined, bad.line, bad.eventId, bad.ts, reason));
    }
  };

  const watch = (u: User, session: string, device: Device, t: number, content: string, durationMs: number, completes: boolean): number => {
    const r = u.rng;
    const quality = r.weighted(QUALITY[device.type]);
    push(u, 'video_play', session, t, device, `"content_id":"${content}","video_quality":"${quality}","playback_position":0,"duration_ms":${durationMs}`);
    const target = completes ? durationMs : Math.floor(durationMs * r.range(0.03, 0.9));
    let pos = 0;
    while (true) {
      // Something happens at least every 25 minutes, so a session never has a 30-minute hole.
      const step = Math.floor(r.range(2 * MIN, 25 * MIN));
      if (pos + step >= target) {
        t += target - pos;
        pos = target;
        break;
      }
      pos += step;
      t += step;
      const what = r.weighted(INTERRUPTIONS);
      if (what === 'rebuffer') {
        push(u, 'rebuffer', session, t, device, `"content_id":"${content}","playback_position":${pos},"buffer_ms":${r.int(300, 15_000)}`);
        t += r.int(300, 15_000);
      } else if (what === 'seek') {
        const from = pos;
        pos = Math.max(0, Math.min(target - 1000, pos + Math.floor(r.range(-5 * MIN, 10 * MIN))));
        push(u, 'video_seek', session, t, device, `"content_id":"${content}","playback_position":${pos},"seek_from":${from}`);
        t += r.int(500, 3000);
      } else {
        push(u, 'video_pause', session, t, device, `"content_id":"${content}","playback_position":${pos}`);
        t += r.chance(0.8) ? r.int(5_000, 3 * MIN) : r.int(3 * MIN, 20 * MIN);
        push(u, 'video_resume', session, t, device, `"content_id":"${content}","playback_position":${pos}`);
      }
    }
    push(u, completes ? 'video_complete' : 'video_stop', session, t, device, `"content_id":"${content}","playback_position":${pos},"duration_ms":${durationMs}`);
    return t;
  };

  /** One session from `start`; returns the time of its last event. */
  const session = (u: User, start: number, forceBinge: boolean): number => {
    const r = u.rng;
    const device = u.devices.length === 1 || r.chance(0.7) ? u.devices[0] : r.pick(u.devices);
    const sid = `sess_${seed}_${u.idx}_${u.sessions++}`;
    let t = start;
    let direct = false;
    if (u.isNew && !u.installed) {
      u.installed = true;
      push(u, 'app_install', sid, t, device, '');
      t += r.int(10_000, 2 * MIN);
    } else if (r.chance(0.12)) {
      push(u, 'notification_view', sid, t, device, `"target":"${r.pick(NOTIFICATIONS)}"`);
      t += r.int(2_000, 20_000);
      direct = r.chance(0.5);
    }
    const binge = forceBinge || (u.binger && r.chance(0.5));
    // Browse path: 0..12 navigation events; short paths are the common case.
    const browse = direct ? 0 : Math.min(12, Math.floor(Math.pow(r.next(), 1.6) * 13) + (r.chance(0.85) ? 1 : 0));
    for (let i = 0; i < browse; i++) {
      if (i === 0) push(u, 'page_view', sid, t, device, `"page":"home"`);
      else {
        const kind = r.weighted(NAVIGATION);
        if (kind === 'search') push(u, 'search', sid, t, device, `"page":"search","query":"${r.pick(QUERIES)}"`);
        else if (kind === 'click') push(u, 'click', sid, t, device, `"page":"${r.pick(PAGES)}","target":"${r.pick(CLICK_TARGETS)}","content_id":"movie_${r.int(1, MOVIES)}"`);
        else push(u, 'page_view', sid, t, device, `"page":"${r.pick(PAGES)}"`);
      }
      t += r.int(2_000, 90_000);
    }
    const plays = binge || direct || browse === 0 || r.chance(0.78);
    if (!plays) return t - 1;
    if (binge) {
      const episodes = forceBinge ? 3 + r.int(0, 2) : r.int(3, 6);
      for (let e = 0; e < episodes; e++) {
        const dur = r.int(20, 45) * MIN;
        const content = `show_${u.show}_s${u.season}e${u.episode}`;
        u.episode++;
        // A binge is a run of completes; only the last episode may be abandoned.
        t = watch(u, sid, device, t, content, dur, forceBinge || e < episodes - 1 || r.chance(0.7));
        t += r.int(5_000, 40_000); // autoplay countdown
      }
    } else {
      const titles = r.chance(0.15) ? 2 : 1;
      for (let i = 0; i < titles; i++) {
        const movie = r.chance(0.45);
        const content = movie ? `movie_${Math.floor(Math.pow(r.next(), 2) * MOVIES) + 1}` : `show_${u.show}_s${u.season}e${u.episode++}`;
        const dur = movie ? r.int(80, 150) * MIN : r.int(20, 60) * MIN;
        t = watch(u, sid, device, t, content, dur, r.chance(movie ? 0.45 : 0.6));
        t += r.int(5_000, 60_000);
        if (i + 1 < titles) {
          push(u, 'page_view', sid, t, device, `"page":"home"`);
          t += r.int(3_000, 60_000);
        }
      }
    }
    if (r.chance(0.25)) {
      push(u, 'page_view', sid, t, device, `"page":"${r.pick(PAGES)}"`);
      t += r.int(2_000, 60_000);
    }
    return t - 1;
  };

  // Sessions are generated in order of planned start; a session's sends all come
  // at or after its start, so once the plan reaches time T every pending send before
  // T is final. Flushing every few minutes keeps the buffer (and the GC) small.
  const FLUSH_EVERY = 10 * MIN;
  const planned: { at: number; user: User; hi: number }[] = [];
  const firstDay = Math.floor(startMs / DAY) * DAY;
  for (let day = firstDay; day < endMs; day += DAY) {
    const dayEnd = day + DAY;
    planned.length = 0;
    for (const u of users) {
      const lo = Math.max(day, startMs, u.joinAt, u.nextFree);
      const hi = Math.min(dayEnd, endMs, u.churnAt);
      if (lo >= hi) continue;
      if (day + DAY > u.breakFrom && day < u.breakTo) continue;
      const r = u.rng;
      const firstDayOfUser = u.sessions === 0;
      if (!firstDayOfUser && !r.chance(u.activity)) continue;
      const count = 1 + (r.chance(0.35) ? 1 : 0) + (r.chance(0.12) ? 1 : 0);
      for (let i = 0; i < count; i++) {
        const localHour = r.weighted(HOURS);
        let at = day + Math.floor(((((localHour - u.utcOffset) % 24) + 24) % 24) * HOUR + r.next() * HOUR);
        if (at < lo || at >= hi) at = lo + Math.floor(r.next() * (hi - lo));
        // A new user's first session is the install, at the moment they join.
        if (i === 0 && firstDayOfUser && u.isNew) at = lo;
        planned.push({ at, user: u, hi });
      }
    }
    planned.sort((a, b) => a.at - b.at || a.user.idx - b.user.idx);
    let flushAt = day + FLUSH_EVERY;
    for (const plan of planned) {
      if (plan.at >= flushAt) {
        pending.sort(bySendOrder);
        let emitted = 0;
        while (emitted < pending.length && pending[emitted].sendAt < plan.at) yield toSend(pending[emitted++]);
        pending = pending.slice(emitted);
        flushAt = plan.at + FLUSH_EVERY;
      }
      const u = plan.user;
      const at = Math.max(plan.at, u.nextFree);
      if (at >= plan.hi) continue;
      // User 0 binges on purpose in their first session, so every simulation has a binger.
      const last = session(u, at, u.idx === 0 && u.sessions === 0);
      u.nextFree = last + SESSION_GAP_MS + 1 + Math.floor(u.rng.next() * 2 * HOUR);
    }
    // Tomorrow's sessions start tomorrow: everything sent before then is final.
    pending.sort(bySendOrder);
    let emitted = 0;
    while (emitted < pending.length && pending[emitted].sendAt < dayEnd) yield toSend(pending[emitted++]);
    pending = pending.slice(emitted);
  }
  for (const p of pending) yield toSend(p);
}

function bySendOrder(a: Pending, b: Pending): number {
  return a.sendAt - b.sendAt || a.seq - b.seq;
}

function toSend(p: Pending): SimulatedSend {
  if (p.ev) {
    const ev = p.ev;
    return { line: serialize(ev), kind: p.kind, eventId: ev.id, ts: ev.ts, sendAt: p.sendAt, lateByMs: p.lateByMs, expectedReason: undefined, userId: ev.user.id };
  }
  return { line: p.line!, kind: 'invalid', eventId: p.eventId, ts: p.ts, sendAt: p.sendAt, lateByMs: undefined, expectedReason: p.reason, userId: undefined };
}

/** Write all sends as NDJSON to a file; returns counts by kind. */
export async function writeNdjson(file: string, opts: SimulationOptions, onSend?: (send: SimulatedSend) => void): Promise<Record<SendKind, number>> {
  const counts: Record<SendKind, number> = { valid: 0, late: 0, duplicate: 0, invalid: 0 };
  const out = fs.createWriteStream(file);
  const failed = new Promise<never>((_, reject) => out.once('error', reject));
  failed.catch(() => {});
  let chunk = '';
  try {
    for (const send of simulate(opts)) {
      counts[send.kind]++;
      onSend?.(send);
      chunk += send.line + '\n';
      if (chunk.length >= 1 << 20) {
        if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
        chunk = '';
      }
    }
    if (chunk.length > 0) out.write(chunk);
    out.end();
    await Promise.race([once(out, 'finish'), failed]);
  } catch (err) {
    out.destroy();
    throw err;
  }
  return counts;
}

/** The binge rule of METRICS.md, for checks: >= 3 completes with the third within 4 h of the first. */
export function bingeUsers(completes: Iterable<{ userId: string; ts: number }>): Set<string> {
  const byUser = new Map<string, number[]>();
  for (const c of completes) {
    const list = byUser.get(c.userId);
    if (list) list.push(c.ts);
    else byUser.set(c.userId, [c.ts]);
  }
  const out = new Set<string>();
  for (const [user, times] of byUser) {
    times.sort((a, b) => a - b);
    for (let i = 2; i < times.length; i++) {
      if (times[i] - times[i - 2] <= BINGE_WINDOW_MS) {
        out.add(user);
        break;
      }
    }
  }
  return out;
}
