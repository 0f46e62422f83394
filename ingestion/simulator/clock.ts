/**
 * Device clocks for the simulator: a client that sends `sent_at` (its own clock
 * at send time, as Snowplow's and PostHog's SDKs do), and devices whose clock is
 * off (a phone reset to 2015, a TV an hour fast). The collector corrects the
 * event time by sent_at (ts = timestamp + (received_at − sent_at)), so such
 * events still land in their true hour.
 */

const YEAR = 365 * 86_400_000;

function hash(s: string, seed: number): number {
  let h = (2166136261 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

/**
 * The skew of a user's device clock: 0 for all but `fraction` of users, whose clocks
 * are off by a fixed amount between −12 years and +1 hour (mostly behind, as reset
 * clocks are). The same user gets the same skew every time.
 */
export function deviceSkewMs(userId: string, fraction: number, seed = 0): number {
  if (fraction <= 0) return 0;
  const h = hash(userId, seed);
  if ((h % 10_000) / 10_000 >= fraction) return 0;
  const u = hash(userId, seed + 1) / 2 ** 32;
  return u < 0.1 ? Math.round(u * 10 * 3_600_000) : -Math.round(((u - 0.1) / 0.9) * 12 * YEAR);
}

/**
 * The line as a device with this clock skew sends it at `now`: its timestamp read
 * from the skewed clock and `sent_at` added. A line that is not an event object
 * with a numeric timestamp (an invalid send) is returned unchanged.
 */
export function withDeviceClock(line: string, now: number, skewMs: number): string {
  if (!line.startsWith('{') || !line.endsWith('}')) return line;
  let found = false;
  const shifted = line.replace(/"timestamp":(\d+)/, (_, ts: string) => {
    found = true;
    return `"timestamp":${Number(ts) + skewMs}`;
  });
  return found ? `${shifted.slice(0, -1)},"sent_at":${now + skewMs}}` : line;
}
