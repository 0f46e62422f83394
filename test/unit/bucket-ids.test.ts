import { describe, expect, it } from 'vitest';
import { dayOf } from '../../common/contract';
import { dayId, hourId } from '../../common/lake';

const iso = (ts: number, length: number) => new Date(ts).toISOString().slice(0, length);

describe('hourId and dayId remember the last bucket, and answer as the ISO string would', () => {
  it('agrees with the ISO string in order, out of order, across boundaries and before 1970', () => {
    const H = 3_600_000;
    const base = Date.UTC(2026, 10, 30, 23, 59, 59, 999);
    // Boundaries, interleaved hours (late events), negative timestamps, and a seeded walk.
    const ts = [base, base + 1, base - H, base + 1, 0, -1, -H, -H - 1, base + 25 * H, base];
    let x = 42;
    for (let i = 0; i < 5000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      ts.push(base + ((x % (72 * H)) - 36 * H));
    }
    for (const t of ts) {
      expect(hourId(t)).toBe(iso(t, 13));
      expect(dayId(t)).toBe(iso(t, 10));
      expect(dayOf(t)).toBe(iso(t, 10));
    }
  });

  it('still throws on a timestamp a Date cannot hold, every time', () => {
    expect(() => hourId(Number.NaN)).toThrow(RangeError);
    expect(() => hourId(Number.NaN)).toThrow(RangeError);
    expect(() => dayId(9e15)).toThrow(RangeError);
    expect(() => dayId(9e15)).toThrow(RangeError);
  });
});
