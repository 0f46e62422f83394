/**
 * The chaos run's arithmetic, apart from its processes so a unit test can check it: the failure
 * kinds and what each affects, the seeded order of the kills, recovery statistics and
 * availability from the client's request log.
 */

/** What a failure can stop, and the signal that says it works again. */
export type Signal = 'accept' | 'speed' | 'lake' | 'api' | 'worker';

export interface FailureKind {
  /** What is killed or stopped. */
  what: string;
  /** The signals it may interrupt; `primary` is the one its recovery time is read from. */
  affects: Signal[];
  primary: Signal;
}

export const FAILURE_KINDS = {
  'broker-leader': { what: 'the Kafka broker leading events.raw partition 0 (SIGKILL)', affects: ['accept', 'speed', 'lake'], primary: 'accept' },
  'broker-controller': { what: 'the active KRaft controller (a combined broker, SIGKILL)', affects: ['accept', 'speed', 'lake'], primary: 'accept' },
  'isr-loss': { what: 'two Kafka brokers at once: below min.insync.replicas (SIGKILL)', affects: ['accept', 'speed', 'lake'], primary: 'accept' },
  redis: { what: 'the Redis primary (SIGKILL; Sentinel promotes the replica)', affects: ['speed'], primary: 'speed' },
  'minio-drive': { what: 'one of the 4 MinIO drives (folder removed)', affects: ['lake'], primary: 'lake' },
  minio: { what: 'the MinIO process (SIGKILL)', affects: ['lake'], primary: 'lake' },
  collector: { what: 'the collector (SIGKILL)', affects: ['accept'], primary: 'accept' },
  speed: { what: 'the speed layer (SIGKILL)', affects: ['speed'], primary: 'speed' },
  lake: { what: 'the lake writer (SIGKILL)', affects: ['lake'], primary: 'lake' },
  worker: { what: 'the Temporal worker (SIGKILL)', affects: ['worker'], primary: 'worker' },
  serving: { what: 'the serving layer (SIGKILL)', affects: ['api'], primary: 'api' },
} as const satisfies Record<string, FailureKind>;

export type KindName = keyof typeof FAILURE_KINDS;
export const KIND_NAMES = Object.keys(FAILURE_KINDS) as KindName[];

/** mulberry32: a small seeded generator, so a seed replays the same schedule. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The order of the kills: every kind once per round, each round shuffled by the seed, as many
 * rounds as `slots` needs. A kind never follows itself across a round boundary.
 */
export function killOrder(kinds: readonly KindName[], slots: number, seed: number): KindName[] {
  const random = rng(seed);
  const out: KindName[] = [];
  while (out.length < slots) {
    const round = [...kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [round[i], round[j]] = [round[j], round[i]];
    }
    if (round.length > 1 && round[0] === out[out.length - 1]) [round[0], round[1]] = [round[1], round[0]];
    out.push(...round);
  }
  return out.slice(0, slots);
}

export interface Stats {
  n: number;
  min: number;
  median: number;
  max: number;
}

export function stats(values: readonly number[]): Stats | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return { n: s.length, min: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, max: s[s.length - 1] };
}

export interface Attempt {
  start: number;
  end: number;
  /** HTTP status, or 0 when no answer came (connection refused or reset). */
  status: number;
}

/**
 * Availability as a client sees it: the service is down from the start of the first attempt not
 * answered 200 until the end of the next attempt answered 200. Returns the down time and the
 * fraction of [from, to) that was up.
 */
export function availability(attempts: readonly Attempt[], from: number, to: number): { downMs: number; up: number; outages: number } {
  const byEnd = [...attempts].sort((a, b) => a.end - b.end);
  let downSince: number | null = null;
  let downMs = 0;
  let outages = 0;
  for (const a of byEnd) {
    if (a.status === 200) {
      if (downSince !== null && a.end > downSince) {
        downMs += Math.min(a.end, to) - Math.max(downSince, from);
        downSince = null;
      }
    } else if (downSince === null) {
      downSince = a.start;
      outages++;
    }
  }
  if (downSince !== null) downMs += to - Math.max(downSince, from);
  const span = Math.max(1, to - from);
  return { downMs: Math.max(0, downMs), up: 1 - Math.max(0, downMs) / span, outages };
}
