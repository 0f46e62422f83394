/** The simulator's breaks: in a window of three weeks or more, users go quiet for a week or more and come back. */
import { describe, expect, it } from 'vitest';
import { simulate } from '../../ingestion/simulator/generate';

const DAY = 86_400_000;
const START = Date.parse('2025-02-03T00:00:00Z');

/** Per user, the sorted day indexes with a valid event. */
function activeDays(days: number): Map<string, number[]> {
  const out = new Map<string, Set<number>>();
  for (const s of simulate({ seed: 14, users: 40, startMs: START, endMs: START + days * DAY })) {
    if (s.kind !== 'valid' || !s.userId) continue;
    const set = out.get(s.userId) ?? new Set<number>();
    set.add(Math.floor((s.ts! - START) / DAY));
    out.set(s.userId, set);
  }
  return new Map([...out].map(([u, d]) => [u, [...d].sort((a, b) => a - b)]));
}

describe('simulator breaks', () => {
  it('has users quiet for 7+ days who come back, in a 4-week window', () => {
    const back = [...activeDays(28).values()].filter((days) => days.some((d, i) => i > 0 && d - days[i - 1] > 7));
    expect(back.length).toBeGreaterThan(0);
  });
});
