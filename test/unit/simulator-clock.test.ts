/**
 * Simulated device clocks: events from devices whose clock is off by hours or
 * years land at their true time once the contract corrects them by sent_at.
 */
import { describe, expect, it } from 'vitest';
import { validateEvent } from '../../common/contract';
import { deviceSkewMs, withDeviceClock } from '../../ingestion/simulator/clock';
import { simulate } from '../../ingestion/simulator/generate';

const NOW = Date.UTC(2026, 10, 21, 12);

describe('simulated device clocks', () => {
  it('skews about the given fraction of users, each always by the same amount', () => {
    const users = Array.from({ length: 2000 }, (_, i) => `user_${i}`);
    const skewed = users.filter((u) => deviceSkewMs(u, 0.25, 7) !== 0);
    expect(skewed.length).toBeGreaterThan(400);
    expect(skewed.length).toBeLessThan(600);
    expect(users.map((u) => deviceSkewMs(u, 0.25, 7))).toEqual(users.map((u) => deviceSkewMs(u, 0.25, 7)));
    expect(users.every((u) => deviceSkewMs(u, 0, 7) === 0)).toBe(true);
  });

  it('the collector puts every skewed event back at its true time; without sent_at the old clocks are too_late', () => {
    const sends = [...simulate({ seed: 3, users: 60, startMs: NOW - 3_600_000, endMs: NOW })].filter((s) => s.kind !== 'invalid');
    let skewedYears = 0;
    for (const s of sends) {
      const skew = deviceSkewMs(s.userId!, 0.5, 3);
      if (skew < -365 * 86_400_000) skewedYears++;
      const sent = withDeviceClock(s.line, NOW, skew);
      const r = validateEvent(JSON.parse(sent), NOW);
      expect(r.ok && r.record.ts).toBe(s.ts);
      if (skew < -8 * 86_400_000) {
        const unsent = JSON.parse(sent);
        delete unsent.sent_at;
        expect(validateEvent(unsent, NOW)).toMatchObject({ ok: false, reason: 'too_late' });
      }
    }
    expect(skewedYears).toBeGreaterThan(0);
  });

  it('leaves a send that is not an event object unchanged', () => {
    expect(withDeviceClock('{"event_id": "x"', NOW, 1000)).toBe('{"event_id": "x"');
    expect(withDeviceClock('[1,2]', NOW, 1000)).toBe('[1,2]');
  });
});
