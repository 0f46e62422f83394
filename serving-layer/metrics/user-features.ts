/**
 * Real-time user features (METRICS.md "User features"): a feature-store style read of one user, fresh to
 * the speed layer's last step. Not a merged series: the windows are relative to now, the speed layer's
 * per-user state (common/speed-keys.ts, `usr`) answers them, and only the two long-memory features (days
 * active in the last 28, first seen) take the batch layer's exact days below the daily boundary.
 */
import { BUCKET_MS, dayOf, SESSION_GAP_MS } from '../../common/contract';
import { readUserFeatures, type UserFeatureState } from '../../common/speed-keys';
import { boundaryOf, type WatermarkView } from '../merge';
import { BatchCache } from '../read-cache';
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

/** Reads one user's features: one Redis round trip, and a batch query cached per batch version. */
export function userFeaturesReader(src: Sources & { batch: { version: number } }, watermark: () => WatermarkView) {
  const cache = new BatchCache(10_000);
  async function batchUser(userId: string, from: string): Promise<BatchUser | null> {
    if (!src.batch.has('user_daily_activity')) return null;
    const key = JSON.stringify([userId, from]);
    const hit = cache.get(src.batch.version, key) as BatchUser | null | undefined;
    if (hit !== undefined) return hit;
    const rows = await src.batch.query(
      `SELECT strftime(min(first_seen_day), '%Y-%m-%d') AS first_seen_day,
              min(first_event_ts) AS first_event_ts,
              string_agg(strftime(day, '%Y-%m-%d'), ',' ORDER BY day) FILTER (WHERE day >= $2::DATE) AS days
       FROM user_daily_activity WHERE user_id = $1`,
      [userId, from],
    );
    const r = rows[0];
    const user: BatchUser | null =
      r === undefined || r.first_seen_day === null
        ? null
        : { firstSeenDay: String(r.first_seen_day), firstEventTs: r.first_event_ts === null ? null : Number(r.first_event_ts), days: r.days === null ? [] : String(r.days).split(',') };
    cache.set(key, user);
    return user;
  }
  return async (userId: string, now: number): Promise<UserFeatures | null> => {
    const from = dayOf(now - (ACTIVE_DAYS_WINDOW - 1) * BUCKET_MS.day);
    const [speed, batch] = await Promise.all([readUserFeatures(src.redis, src.cfg, userId, now), batchUser(userId, from)]);
    return userFeaturesOf(userId, now, speed, batch, boundaryOf(watermark(), 'daily').end);
  };
}
