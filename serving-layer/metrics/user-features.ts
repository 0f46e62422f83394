/**
 * Real-time user features (METRICS.md "User features"): a feature-store style read of one user, fresh to
 * the speed layer's last step. Not a merged series: the windows are relative to now, the speed layer's
 * per-user state (common/speed-keys.ts, `usr`) answers them, and only the two long-memory features (days
 * active in the last 28, first seen) take the batch layer's exact days below the daily boundary.
 */
import type { DuckDBValue } from '@duckdb/node-api';
import { BUCKET_MS, dayOf, SESSION_GAP_MS } from '../../common/contract';
import { readUserFeatures, type UserFeatureState } from '../../common/speed-keys';
import { boundaryOf, type WatermarkView } from '../merge';
import type { Sources } from './shared';

export const ACTIVE_DAYS_WINDOW = 28;

export interface UserFeatures {
  user_id: string;
  /** The instant the windows are relative to (epoch ms). */
  as_of: number;
  /** Where the user was found: the speed layer's state (R after their last event), the batch layer's published days. */
  sources: { speed: boolean; batch: boolean };
  windows: { '5m': number; '1h': number; '24h': number };
  events: { '5m': number; '1h': number; '24h': number };
  plays: { '5m': number; '1h': number; '24h': number };
  watch_time_ms_24h: number;
  playing_since: number | null;
  current_session: { start: number; last_event: number; events: number; duration_ms: number; device_type: string } | null;
  last_content: { content_id: string; ts: number } | null;
  binge: { binging_today: boolean; completes_4h: number };
  days_active_28d: { value: number; from_day: string; batch_days: number; speed_days: number; batch_until: string | null };
  first_seen: { ts: number | null; day: string; source: 'batch' | 'speed' } | null;
}

interface BatchUser {
  firstSeenDay: string | null;
  firstEventTs: number | null;
  days: string[];
}

/** Window starts at `now`: the current minute and the 4 (59) before it; the current hour and the 23 before it. */
export function featureWindows(now: number): UserFeatures['windows'] {
  const minute = Math.floor(now / BUCKET_MS.minute) * BUCKET_MS.minute;
  const hour = Math.floor(now / BUCKET_MS.hour) * BUCKET_MS.hour;
  return { '5m': minute - 4 * BUCKET_MS.minute, '1h': minute - 59 * BUCKET_MS.minute, '24h': hour - 23 * BUCKET_MS.hour };
}

/** The features of a speed state and a batch history at `now`; null when neither knows the user. */
export function userFeaturesOf(userId: string, now: number, speed: UserFeatureState | null, batch: BatchUser | null, batchUntil: number | null): UserFeatures | null {
  if (speed === null && batch === null) return null;
  const w = featureWindows(now);
  const sum = (from: number, of: 'events' | 'plays'): number => (speed?.minutes ?? []).filter((m) => m.minute >= from).reduce((n, m) => n + m[of], 0);
  const hours = (speed?.hours ?? []).filter((h) => h.hour >= w['24h']);
  const s = speed?.session ?? null;
  const open = s !== null && now - s.last <= SESSION_GAP_MS && dayOf(s.last) === dayOf(now);
  const fromDay = dayOf(now - (ACTIVE_DAYS_WINDOW - 1) * BUCKET_MS.day);
  const untilDay = batchUntil === null ? null : dayOf(batchUntil);
  const batchDays = (batch?.days ?? []).filter((d) => d >= fromDay && (untilDay === null || d < untilDay));
  const speedDays = (speed?.days ?? []).map(dayOf).filter((d) => d >= fromDay && (untilDay === null || d >= untilDay));
  const days = new Set([...batchDays, ...speedDays]);
  let firstSeen: UserFeatures['first_seen'] = null;
  if (batch?.firstSeenDay) firstSeen = { ts: batch.firstEventTs, day: batch.firstSeenDay, source: 'batch' };
  if (speed !== null && (firstSeen === null || dayOf(speed.firstSeen) < firstSeen.day)) firstSeen = { ts: speed.firstSeen, day: dayOf(speed.firstSeen), source: 'speed' };
  return {
    user_id: userId,
    as_of: now,
    sources: { speed: speed !== null, batch: batch !== null },
    windows: w,
    events: { '5m': sum(w['5m'], 'events'), '1h': sum(w['1h'], 'events'), '24h': hours.reduce((n, h) => n + h.events, 0) },
    plays: { '5m': sum(w['5m'], 'plays'), '1h': sum(w['1h'], 'plays'), '24h': hours.reduce((n, h) => n + h.plays, 0) },
    watch_time_ms_24h: hours.reduce((n, h) => n + h.watchMs, 0),
    playing_since: speed?.playingSince ?? null,
    current_session: open && s !== null ? { start: s.start, last_event: s.last, events: s.events, duration_ms: s.last - s.start, device_type: s.deviceType } : null,
    last_content: speed?.lastContent ? { content_id: speed.lastContent.contentId, ts: speed.lastContent.ts } : null,
    binge: { binging_today: speed?.bingeToday ?? false, completes_4h: speed?.completes4h ?? 0 },
    days_active_28d: { value: days.size, from_day: fromDay, batch_days: batchDays.length, speed_days: speedDays.filter((d) => !batchDays.includes(d)).length, batch_until: untilDay },
    first_seen: firstSeen,
  };
}

/** The store a user index is built from: the batch source, its version and a chunked read. */
export interface IndexedBatchSource {
  version: number;
  has(table: string): boolean;
  streamColumns(sql: string, params?: DuckDBValue[]): AsyncIterable<DuckDBValue[][]>;
}

/**
 * Days kept per user: tomorrow and the 39 days before it. A request needs the days from now − 27 on, and
 * now only moves forward from the build, so this holds the window with room (a clock a little ahead).
 */
const INDEX_DAYS = 40;
const DAY = BUCKET_MS.day;

/**
 * The batch layer's part of every user's features, as an in-memory lookup built once per batch version
 * (the online store of a feature store): first seen day, first event and the days active in the last
 * INDEX_DAYS, from `user_daily_activity`. A request then costs one Redis round trip and a Map lookup; a
 * per-user DuckDB query cost ~0.5 ms of the event loop each and missed for every user not asked for since
 * the last publish, which is most of them in a feature-store workload (docs/benchmarks.md, "User features").
 *
 * Columnar, about 80 bytes per user (the Map's key and slot, three numbers; 81.6 B measured over a million
 * users, built in 3.0 s from 4 M rows, 7.4 µs a lookup) with batch history. The build streams DuckDB's chunks, so requests go on between them; until a newer version's
 * index is built, requests read the previous one with the daily boundary it was built at, so batch days and
 * speed days never overlap or leave a gap.
 */
export class BatchUserIndex {
  private built: { version: number; boundary: number | null; slot: Map<string, number>; firstSeen: Int32Array; firstTs: Float64Array; mask: Float64Array; lastDay: number } | null = null;
  private building: Promise<void> | null = null;
  /** Builds finished and the users in the current index (for the status page and tests). */
  builds = 0;

  constructor(
    private readonly src: IndexedBatchSource,
    private readonly boundary: () => number | null,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts building the current version's index ahead of the first request. */
  warm(): void {
    void this.current().catch(() => undefined);
  }

  get users(): number {
    return this.built?.slot.size ?? 0;
  }

  /** The index for the store's current version, or the previous one while it builds (the first call waits). */
  private async current(): Promise<NonNullable<BatchUserIndex['built']>> {
    if (this.built === null || this.built.version !== this.src.version) {
      this.building ??= this.build().finally(() => (this.building = null));
      if (this.built === null) await this.building;
    }
    return this.built!;
  }

  private async build(): Promise<void> {
    const version = this.src.version;
    const boundary = this.boundary();
    const lastDay = Math.floor(this.now() / DAY) + 1;
    const empty = { version, boundary, slot: new Map<string, number>(), firstSeen: new Int32Array(0), firstTs: new Float64Array(0), mask: new Float64Array(0), lastDay };
    if (!this.src.has('user_daily_activity')) {
      this.built = empty;
      return;
    }
    // Bit i of the mask: the user was active on day lastDay − i (i < INDEX_DAYS, exact in a double).
    const sql = `SELECT user_id,
        min(first_seen_day - DATE '1970-01-01')::INTEGER AS first_seen,
        min(first_event_ts)::DOUBLE AS first_ts,
        coalesce(sum(DISTINCT CASE WHEN $1 - (day - DATE '1970-01-01') BETWEEN 0 AND ${INDEX_DAYS - 1}
                                   THEN pow(2, $1 - (day - DATE '1970-01-01')) END), 0)::DOUBLE AS mask
      FROM user_daily_activity GROUP BY user_id`;
    const slot = new Map<string, number>();
    const firstSeen: number[] = [];
    const firstTs: number[] = [];
    const mask: number[] = [];
    for await (const [u, f, t, m] of this.src.streamColumns(sql, [lastDay])) {
      for (let i = 0; i < u.length; i++) {
        slot.set(String(u[i]), firstSeen.length);
        firstSeen.push(f[i] === null ? -1 : Number(f[i]));
        firstTs.push(t[i] === null ? Number.NaN : Number(t[i]));
        mask.push(Number(m[i]));
      }
    }
    this.built = { version, boundary, slot, firstSeen: Int32Array.from(firstSeen), firstTs: Float64Array.from(firstTs), mask: Float64Array.from(mask), lastDay };
    this.builds += 1;
  }

  /** One user's batch history (days from `from` on) and the daily boundary it is exact below. */
  async lookup(userId: string, from: string): Promise<{ user: BatchUser | null; boundary: number | null }> {
    const ix = await this.current();
    const i = ix.slot.get(userId);
    if (i === undefined || ix.firstSeen[i] < 0) return { user: null, boundary: ix.boundary };
    const days: string[] = [];
    for (let b = INDEX_DAYS - 1, m = ix.mask[i]; b >= 0; b--) {
      const bit = 2 ** b;
      if (m >= bit) {
        m -= bit;
        const day = dayOf((ix.lastDay - b) * DAY);
        if (day >= from) days.push(day);
      }
    }
    const ts = ix.firstTs[i];
    return { user: { firstSeenDay: dayOf(ix.firstSeen[i] * DAY), firstEventTs: Number.isNaN(ts) ? null : ts, days }, boundary: ix.boundary };
  }
}

/** Reads one user's features: one Redis round trip, and the batch part from an index built per batch version. */
export function userFeaturesReader(src: Omit<Sources, 'batch'> & { batch: IndexedBatchSource }, watermark: () => WatermarkView) {
  const index = new BatchUserIndex(src.batch, () => boundaryOf(watermark(), 'daily').end);
  const read = async (userId: string, now: number): Promise<UserFeatures | null> => {
    const from = dayOf(now - (ACTIVE_DAYS_WINDOW - 1) * BUCKET_MS.day);
    const [speed, batch] = await Promise.all([readUserFeatures(src.redis, src.cfg, userId, now), index.lookup(userId, from)]);
    return userFeaturesOf(userId, now, speed, batch.user, batch.boundary);
  };
  return Object.assign(read, { index });
}
