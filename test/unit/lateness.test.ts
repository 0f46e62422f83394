/**
 * The lateness policy of the contract: the device clock is corrected by sent_at,
 * and what is still older than the horizon is a too_late dead letter.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_LATENESS_HORIZON_MS, DLQ_REASONS, validateEvent } from '../../common/contract';

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0);
const DAY = 86_400_000;
const base = { event_id: 'e1', event_type: 'click', user_id: 'u1' } as const;

describe('lateness policy', () => {
  it('dead-letters an event stamped 2015 (a reset device clock) as too_late', () => {
    const r = validateEvent({ ...base, timestamp: Date.UTC(2015, 0, 1) }, NOW);
    expect(r).toMatchObject({ ok: false, reason: 'too_late' });
    expect(DLQ_REASONS).toContain('too_late');
  });

  it('accepts events up to the horizon and rejects just past it; the horizon is configurable', () => {
    expect(validateEvent({ ...base, timestamp: NOW - DEFAULT_LATENESS_HORIZON_MS }, NOW).ok).toBe(true);
    expect(validateEvent({ ...base, timestamp: NOW - DEFAULT_LATENESS_HORIZON_MS - 1 }, NOW)).toMatchObject({ ok: false, reason: 'too_late' });
    expect(validateEvent({ ...base, timestamp: NOW - 2 * DAY }, NOW, { latenessHorizonMs: DAY })).toMatchObject({ ok: false, reason: 'too_late' });
    expect(validateEvent({ ...base, timestamp: Date.UTC(2015, 0, 1) }, NOW, { latenessHorizonMs: Infinity }).ok).toBe(true);
  });

  it('corrects the clock skew with sent_at: ts = timestamp + (received_at − sent_at), keeping the device time', () => {
    // The device thinks it is 2015-03-01 10:00; it created the event 30 s before sending it.
    const deviceNow = Date.UTC(2015, 2, 1, 10, 0, 0);
    const r = validateEvent({ ...base, timestamp: deviceNow - 30_000, sent_at: deviceNow }, NOW);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.record.ts).toBe(NOW - 30_000);
    expect(r.record.device_ts).toBe(deviceNow - 30_000);
    expect(r.record.sent_at).toBe(deviceNow);
    expect(r.record.received_at).toBe(NOW);
    expect(r.record.extra).toBeNull();
  });

  it('judges the range rules on the corrected time', () => {
    // A clock 1 h fast that stamps an event 10 min in its future is still 10 min in the future once corrected.
    const fast = NOW + 3_600_000;
    expect(validateEvent({ ...base, timestamp: fast + 600_000, sent_at: fast }, NOW)).toMatchObject({ ok: false, reason: 'timestamp_out_of_range' });
    // An event created 8 days before it was sent (an offline queue) is too late even with a correct clock.
    expect(validateEvent({ ...base, timestamp: NOW - 8 * DAY, sent_at: NOW }, NOW)).toMatchObject({ ok: false, reason: 'too_late' });
    expect(validateEvent({ ...base, timestamp: NOW, sent_at: 'yesterday' }, NOW)).toMatchObject({ ok: false, reason: 'schema_violation' });
  });

  it('leaves a record without sent_at as before (no device_ts / sent_at fields)', () => {
    const r = validateEvent({ ...base, timestamp: NOW - 1000 }, NOW);
    expect(r.ok && r.record.ts).toBe(NOW - 1000);
    expect(r.ok && 'device_ts' in r.record).toBe(false);
  });
});
