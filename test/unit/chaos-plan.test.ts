import { describe, expect, it } from 'vitest';
import { availability, killOrder, KIND_NAMES, stats } from '../../bench/chaos-plan';

describe('chaos run: the kill order', () => {
  it('a seed replays the same order; every kind comes once per round, never twice in a row', () => {
    const a = killOrder(KIND_NAMES, 30, 7);
    expect(killOrder(KIND_NAMES, 30, 7)).toEqual(a);
    expect(killOrder(KIND_NAMES, 30, 8)).not.toEqual(a);
    expect([...a.slice(0, KIND_NAMES.length)].sort()).toEqual([...KIND_NAMES].sort());
    for (let i = 1; i < a.length; i++) expect(a[i]).not.toBe(a[i - 1]);
  });
});

describe('chaos run: statistics', () => {
  it('min, median (mean of the middle two when even) and max', () => {
    expect(stats([])).toBeNull();
    expect(stats([3, 1, 2])).toEqual({ n: 3, min: 1, median: 2, max: 3 });
    expect(stats([4, 1, 3, 2])).toEqual({ n: 4, min: 1, median: 2.5, max: 4 });
  });

  it('availability: down from the first refused attempt to the end of the next 200', () => {
    const attempts = [
      { start: 0, end: 10, status: 200 },
      { start: 100, end: 110, status: 503 },
      { start: 150, end: 160, status: 0 },
      { start: 300, end: 310, status: 200 },
      { start: 900, end: 905, status: 503 },
    ];
    // Down 100 → 310, and from 900 to the end (1000).
    expect(availability(attempts, 0, 1000)).toEqual({ downMs: 310, up: 1 - 310 / 1000, outages: 2 });
    expect(availability([{ start: 0, end: 5, status: 200 }], 0, 1000)).toEqual({ downMs: 0, up: 1, outages: 0 });
  });
});
