/**
 * Complex event processing: binge detection (METRICS.md "Binge watching").
 * A user binges on day D when three of their video_complete events lie within
 * 4 h (third − first ≤ BINGE_WINDOW_MS) and the third falls on D. Pure, so the
 * edge cases are unit-tested; the consumer feeds it the user's recent completes
 * from Redis plus the batch's.
 */
import { BINGE_WINDOW_MS, dayOf } from '../common/contract';

/**
 * Every day on which the completes (any order, duplicates by identity already
 * removed) make a binge, with the ts of the earliest qualifying third complete.
 * Checking each complete against the one two places earlier is exact: if any
 * three completes ending at t fit in the window, the two right before t do too.
 */
export function bingeDays(completeTs: readonly number[]): Map<string, number> {
  const ts = [...completeTs].sort((a, b) => a - b);
  const out = new Map<string, number>();
  for (let i = 2; i < ts.length; i++) {
    if (ts[i] - ts[i - 2] <= BINGE_WINDOW_MS) {
      const day = dayOf(ts[i]);
      if (!out.has(day)) out.set(day, ts[i]);
    }
  }
  return out;
}
