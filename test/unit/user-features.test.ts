/**
 * User features (METRICS.md "User features"): the fold's per-user summary of a batch and the serving
 * layer's features from a speed state and a batch history, on hand-made values.
 */
import { describe, expect, it } from 'vitest';
import { validateEvent, type EventRecord } from '../../common/contract';
import type { UserFeatureState } from '../../common/speed-keys';
import { userBatch } from '../../speed-layer/fold';
import { featureWindows, userFeaturesOf } from '../../serving-layer/metrics/user-features';

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T = Date.UTC(2026, 10, 30, 12, 0, 0);

function rec(id: string, type: string, ts: number, extra: Record<string, string> = {}): EventRecord {
  const v = validateEvent({ event_id: id, event_type: type, user_id: 'u', timestamp: ts, properties: extra }, T);
  if (!v.ok) throw new Error(v.detail);
  return v.record;
}

describe('userBatch', () => {
  it('sorts by (ts, event_id), closes play intervals, keeps the first and last session runs', () => {
    const u = userBatch([
      rec('e5', 'video_pause', T - 10 * MIN),
      rec('e1', 'page_view', T - 3 * HOUR, { device_type: 'web' }),
      rec('e2', 'video_play', T - 2 * HOUR, { device_type: 'tv', content_id: 'a' }),
      rec('e3', 'video_stop', T - 2 * HOUR + 5 * MIN),
      rec('e4', 'video_play', T - 20 * MIN, { device_type: 'tv', content_id: 'b' }),
      rec('e6', 'video_resume', T - 1 * MIN),
    ]);
    expect(u.firstTs).toBe(T - 3 * HOUR);
    expect(u.lastTs).toBe(T - MIN);
    expect(u.lastContent).toEqual({ ts: T - 20 * MIN, contentId: 'b' });
    // The first playback event closes what an earlier batch left open; the batch leaves the resume open.
    expect(u.watchFirst).toBe(T - 2 * HOUR);
    expect(u.watchOpen).toBe(T - MIN);
    const watch = [...u.hours.values()].reduce((n, h) => n + h[2], 0);
    expect(watch).toBe(5 * MIN + 10 * MIN);
    expect([...u.hours.values()].reduce((n, h) => n + h[1], 0)).toBe(2);
    // Three sessions (gaps of 55 and 95 minutes): the first and the last travel.
    expect(u.runs).toEqual([
      { start: T - 3 * HOUR, end: T - 3 * HOUR, events: 1, deviceType: 'web' },
      { start: T - 20 * MIN, end: T - MIN, events: 3, deviceType: 'tv' },
    ]);
    expect(u.days.size).toBe(1);
  });

  it('splits a session at midnight and caps an interval at 4 h', () => {
    const midnight = Date.UTC(2026, 10, 30);
    const u = userBatch([rec('a', 'video_play', midnight - 5 * HOUR), rec('b', 'video_complete', midnight - MIN), rec('c', 'page_view', midnight + MIN)]);
    expect(u.runs.map((r) => r.events)).toEqual([1, 1]);
    expect([...u.hours.values()].reduce((n, h) => n + h[2], 0)).toBe(4 * HOUR);
    expect(u.days.size).toBe(2);
  });
});

describe('userFeaturesOf', () => {
  const now = T + 30 * 1000;
  const state: UserFeatureState = {
    minutes: [
      { minute: T, events: 2, plays: 1 },
      { minute: T - 4 * MIN, events: 1, plays: 0 },
      { minute: T - 5 * MIN, events: 4, plays: 1 },
      { minute: T - 60 * MIN, events: 7, plays: 0 },
    ],
    hours: [
      { hour: T, events: 7, plays: 2, watchMs: 1000 },
      { hour: T - 23 * HOUR, events: 1, plays: 0, watchMs: 5 },
      { hour: T - 24 * HOUR, events: 9, plays: 9, watchMs: 9 },
    ],
    days: [T - 2 * DAY, T - DAY, T].map((d) => Math.floor(d / DAY) * DAY),
    firstSeen: T - 2 * DAY,
    lastEvent: T,
    session: { start: T - 10 * MIN, last: T, events: 3, deviceType: 'tv' },
    lastContent: { contentId: 'c', ts: T - MIN },
    playingSince: null,
    completes4h: 2,
    bingeToday: false,
  };

  it('sums the windows that start at the current minute − 4 / − 59 and the current hour − 23', () => {
    expect(featureWindows(now)).toEqual({ '5m': T - 4 * MIN, '1h': T - 59 * MIN, '24h': T - 23 * HOUR });
    const f = userFeaturesOf('u', now, state, null, null)!;
    expect(f.events).toEqual({ '5m': 3, '1h': 7, '24h': 8 });
    expect(f.plays).toEqual({ '5m': 1, '1h': 2, '24h': 2 });
    expect(f.watch_time_ms_24h).toBe(1005);
    expect(f.current_session).toEqual({ start: T - 10 * MIN, last_event: T, events: 3, duration_ms: 10 * MIN, device_type: 'tv' });
    expect(userFeaturesOf('u', T + 31 * MIN, state, null, null)!.current_session).toBeNull();
  });

  it('takes days before the batch boundary from the batch layer and the rest from the speed layer', () => {
    const day = (t: number) => new Date(t).toISOString().slice(0, 10);
    const batch = { firstSeenDay: day(T - 40 * DAY), firstEventTs: T - 40 * DAY, days: [day(T - 40 * DAY), day(T - 27 * DAY), day(T - 5 * DAY), day(T - DAY)] };
    const f = userFeaturesOf('u', now, state, batch, Math.floor((T - DAY) / DAY) * DAY)!;
    // Batch: T−27 and T−5 (T−40 is outside, T−1 is at the boundary: the speed layer's); speed: T−1 and T.
    expect(f.days_active_28d).toMatchObject({ value: 4, batch_days: 2, speed_days: 2, batch_until: day(T - DAY), from_day: day(T - 27 * DAY) });
    expect(f.first_seen).toEqual({ ts: T - 40 * DAY, day: day(T - 40 * DAY), source: 'batch' });
    expect(userFeaturesOf('u', now, null, null, null)).toBeNull();
    expect(userFeaturesOf('u', now, null, batch, T)!.sources).toEqual({ speed: false, batch: true });
  });
});
