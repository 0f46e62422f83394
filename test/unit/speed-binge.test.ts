import { describe, expect, it } from 'vitest';
import { BINGE_WINDOW_MS } from '../../common/contract';
import { bingeDays } from '../../speed-layer/binge';

const D = Date.UTC(2024, 0, 10);
const H = 3_600_000;

describe('bingeDays', () => {
  it('counts three completes exactly 4 h apart (first to third)', () => {
    expect(bingeDays([D + H, D + 3 * H, D + H + BINGE_WINDOW_MS])).toEqual(new Map([['2024-01-10', D + 5 * H]]));
  });

  it('does not count 4 h + 1 ms', () => {
    expect(bingeDays([D + H, D + 3 * H, D + H + BINGE_WINDOW_MS + 1]).size).toBe(0);
  });

  it('needs three completes', () => {
    expect(bingeDays([D + H, D + H + 1]).size).toBe(0);
    expect(bingeDays([]).size).toBe(0);
  });

  it('finds a window inside a longer, unordered series', () => {
    const ts = [D + 20 * H, D + H, D + 9 * H, D + 14 * H, D + 10 * H, D + 2 * H];
    // 1h, 2h, 9h (8h span: no); 9h, 10h, 14h (5h: no); 10h, 14h, 20h (no); 2h, 9h, 10h (no)
    expect(bingeDays(ts).size).toBe(0);
    expect(bingeDays([...ts, D + 12 * H])).toEqual(new Map([['2024-01-10', D + 12 * H]])); // 9h, 10h, 12h
  });

  it('puts the binge on the day of the third complete, across midnight', () => {
    expect(bingeDays([D - 2 * H, D - H, D + H])).toEqual(new Map([['2024-01-10', D + H]]));
    expect(bingeDays([D - 3 * H, D - 2 * H, D - H])).toEqual(new Map([['2024-01-09', D - H]]));
  });

  it('keeps the earliest third per day and reports each day once', () => {
    const ts = [D, D + 1, D + 2, D + 3, D + 86_400_000, D + 86_400_001, D + 86_400_002];
    expect(bingeDays(ts)).toEqual(
      new Map([
        ['2024-01-10', D + 2],
        ['2024-01-11', D + 86_400_002],
      ]),
    );
  });

  it('counts completes at the same ts as distinct completes', () => {
    expect(bingeDays([D, D, D]).size).toBe(1);
  });
});
