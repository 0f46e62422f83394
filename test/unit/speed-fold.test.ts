import { describe, expect, it } from 'vitest';
import { ALL, decodeRecord, RejectedRecord, validateEvent, type EventRecord, type EventType } from '../../common/contract';
import { countField, countFields, parseCountField } from '../../common/speed-keys';
import { eventIdHash, foldEvents, isLate } from '../../speed-layer/fold';

const NOW = Date.UTC(2024, 0, 10, 12, 0, 0);
const MIN = 60_000;
const HOUR = 3_600_000;
const opts = { now: NOW, secondRetentionMs: 2 * HOUR, retentionMs: 48 * HOUR };

function rec(id: string, type: EventType, user: string, ts: number, device = 'smart_tv', location = 'US-CA-SF', extra: Record<string, unknown> = {}): EventRecord {
  const r = validateEvent(
    { event_id: id, event_type: type, user_id: user, session_id: `s-${user}`, timestamp: ts, properties: { device_type: device, ...extra }, context: { location } },
    NOW,
  );
  if (!r.ok) throw new Error(r.detail);
  return r.record;
}
const input = (r: EventRecord) => ({ record: r, hash: eventIdHash(r.event_id) });

describe('foldEvents', () => {
  const t0 = NOW - 10 * MIN; // 11:50:00.000
  const events = [
    rec('e1', 'video_play', 'u1', t0 + 1000, 'smart_tv', 'US-CA', { content_id: 'c1' }),
    rec('e2', 'video_play', 'u2', t0 + 1500, 'mobile', 'FR-75', { content_id: 'c1' }),
    rec('e3', 'click', 'u1', t0 + 61_000, 'smart_tv', 'US-NY'),
    rec('e4', 'video_pause', 'u2', t0 + 2000, 'mobile', 'nowhere'),
  ];

  it('keeps per-user feature state unless SPEED_USER_FEATURES turns it off, and only then costs the step nothing for it', () => {
    const on = foldEvents(events.map(input), opts);
    const off = foldEvents(events.map(input), { ...opts, userFeatures: false });
    expect([...on.userFeatures.keys()].sort()).toEqual(['u1', 'u2']);
    expect(off.userFeatures.size).toBe(0);
    // The counters are the same either way; the step is smaller without the users' hashes.
    expect(off.counts).toEqual(on.counts);
    expect(off.cost.keys).toBe(on.cost.keys - 2);
    expect(off.cost.args).toBeLessThan(on.cost.args);
  });

  it('counts each event under all 8 roll-up combinations per second and per minute', () => {
    const f = foldEvents(events.map(input), opts);
    expect(f.events).toBe(4);
    const m0 = f.counts.minute.get(t0)!;
    expect(m0.get(countField(ALL, ALL, ALL))).toBe(3);
    expect(m0.get(countField('video_play', ALL, ALL))).toBe(2);
    expect(m0.get(countField('video_play', 'smart_tv', 'US'))).toBe(1);
    expect(m0.get(countField('video_play', ALL, 'FR'))).toBe(1);
    expect(m0.get(countField(ALL, 'mobile', ALL))).toBe(2);
    expect(m0.get(countField(ALL, 'mobile', 'unknown'))).toBe(1);
    expect(m0.get(countField('video_pause', 'mobile', 'unknown'))).toBe(1);
    expect(m0.get(countField(ALL, ALL, 'US'))).toBe(1);
    // 3 events × 8 combinations, overlapping on shared ALL fields: the sum over full-cross fields is the event count
    const fullCross = [...m0.entries()].filter(([k]) => !Object.values(parseCountField(k)).includes(ALL));
    expect(fullCross.reduce((s, [, n]) => s + n, 0)).toBe(3);
    expect(f.counts.minute.get(t0 + MIN)!.get(countField('click', 'smart_tv', 'US'))).toBe(1);
    expect(f.counts.second.get(t0 + 1000)!.get(countField(ALL, ALL, ALL))).toBe(2); // e1 at .000, e2 at .500 of the same second
    expect(f.counts.second.get(t0 + 2000)!.get(countField('video_pause', ALL, ALL))).toBe(1);
    expect(countFields('click', 'tv', 'US')).toHaveLength(8);
  });

  it('collects distinct users per minute/hour/day, overall and per device', () => {
    const f = foldEvents(events.map(input), opts);
    expect([...f.users.minute.get(t0)!.get(ALL)!].sort()).toEqual(['u1', 'u2']);
    expect([...f.users.minute.get(t0)!.get('mobile')!]).toEqual(['u2']);
    expect([...f.users.hour.get(NOW - HOUR)!.get(ALL)!].sort()).toEqual(['u1', 'u2']);
    expect([...f.users.day.get(Date.UTC(2024, 0, 10))!.get('smart_tv')!]).toEqual(['u1']);
  });

  it('folds playback per minute, plays per content per hour and live activity', () => {
    const f = foldEvents(events.map(input), opts);
    expect(f.playback.get(t0)).toEqual({ plays: 2, pauses: 1 });
    expect(f.playback.get(t0 + MIN)).toBeUndefined();
    expect(f.topContent.get(NOW - HOUR)!.get('c1')).toBe(2);
    expect(f.liveUsers.size).toBe(0); // 10 minutes ago: outside the 5-minute window
    expect(f.liveSessions.get('s-u1')).toBe(t0 + 61_000);
  });

  it('counts an event_id once within a batch (first occurrence wins)', () => {
    const dup = rec('e1', 'click', 'u9', t0 + 5000, 'web'); // same id, different payload
    const f = foldEvents([...events, events[0], dup].map(input), opts);
    expect(f.events).toBe(4);
    expect(f.duplicates).toBe(2);
    expect(f.counts.minute.get(t0)!.get(countField('click', ALL, ALL))).toBeUndefined();
    expect(f.users.minute.get(t0)!.has('web')).toBe(false);
    // Remembered by arrival epoch (received_at = NOW here), not by event time.
    expect(f.dedupe.get(Math.floor(NOW / (5 * MIN)) * 5 * MIN)).toHaveLength(4);
    expect(f.dedupe.size).toBe(1);
  });

  it('leaves events older than the retention to the batch layer, and old ones out of the per-second family', () => {
    const old = rec('old', 'click', 'u1', NOW - 49 * HOUR);
    const mid = rec('mid', 'click', 'u1', NOW - 3 * HOUR);
    const f = foldEvents([old, mid].map(input), opts);
    expect(f.lateMinute).toBe(1);
    expect(f.lateSecond).toBe(1);
    expect(f.events).toBe(1);
    expect(f.counts.minute.get(NOW - 3 * HOUR)!.get(countField(ALL, ALL, ALL))).toBe(1);
    expect(f.counts.second.size).toBe(0);
    expect(f.dedupe.has(NOW - 49 * HOUR)).toBe(false);
  });

  it('decides lateness by whether the bucket would already have expired', () => {
    const R = 2 * HOUR;
    expect(isLate(NOW - R - 1000, 'second', R, NOW)).toBe(true); // bucket end = NOW - R
    expect(isLate(NOW - R - 999, 'second', R, NOW)).toBe(true); // same second
    expect(isLate(NOW - R, 'second', R, NOW)).toBe(false);
  });
});

describe('eventIdHash', () => {
  it('is 64 bits of hex, deterministic, and collision-free over 200k sequential ids', () => {
    expect(eventIdHash('evt_1')).toMatch(/^[0-9a-f]{16}$/);
    expect(eventIdHash('evt_1')).toBe(eventIdHash('evt_1'));
    const seen = new Set<string>();
    for (let i = 0; i < 200_000; i++) seen.add(eventIdHash(`evt_${i}`));
    expect(seen.size).toBe(200_000);
  });
});

describe('decodeRecord, as the speed layer reads a message', () => {
  it('reads a collector record and rejects what is not one', () => {
    const r = rec('e1', 'click', 'u1', NOW);
    expect(decodeRecord(Buffer.from(JSON.stringify(r)))).toEqual(r);
    expect(decodeRecord(Buffer.from('{not json'))).toBeInstanceOf(RejectedRecord);
    expect(decodeRecord(null)).toBeInstanceOf(RejectedRecord);
    expect(decodeRecord(Buffer.from('[1]'))).toBeInstanceOf(RejectedRecord);
    expect(decodeRecord(Buffer.from(JSON.stringify({ ...r, event_type: 'teleport' })))).toBeInstanceOf(RejectedRecord);
    expect(decodeRecord(Buffer.from(JSON.stringify({ ...r, ts: '2024' })))).toBeInstanceOf(RejectedRecord);
  });
});
