/**
 * A consumed batch is applied as bounded Redis steps: the fold stops before the
 * step's plan could pass the limits, the steps together count exactly what one
 * unbounded fold counts, and the plan reaches ioredis as one array argument
 * (never spread onto the call stack).
 */
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { validateEvent, EVENT_TYPES, type EventRecord, type EventType } from '../../common/contract';
import { speedKeys } from '../../common/speed-keys';
import { buildPlan, RedisApplier, type ApplyRequest } from '../../speed-layer/apply';
import { newUserWrites } from '../../speed-layer/user-state';
import { firstAtOrAfter } from '../../speed-layer/consumer';
import { baseStepCost, eventIdHash, foldEvents, type Fold, type FoldInput, type StepLimits } from '../../speed-layer/fold';

const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const cfg = loadConfig({ REDIS_KEY_PREFIX: 't:steps:', SPEED_RETENTION_MS: String(4 * DAY) });
const keys = speedKeys(cfg);
const foldOpts = { now: NOW, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: cfg.speed.retentionMs, keyPrefixBytes: cfg.redis.keyPrefix.length };

/** Deterministic pseudo-random events spread over `spanMs` before NOW: what a restart behind days of backlog reads. */
function events(n: number, spanMs: number, seed = 1): FoldInput[] {
  let x = seed;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const devices = ['smart_tv', 'mobile', 'web', 'tablet', 'console'];
  const places = ['US-CA', 'FR-75', 'DE-BE', 'BR-SP', 'JP-13', 'IN-MH'];
  const out: FoldInput[] = [];
  for (let i = 0; i < n; i++) {
    const type = EVENT_TYPES[Math.floor(rnd() * EVENT_TYPES.length)] as EventType;
    const user = `user-${Math.floor(rnd() * 3000)}`;
    const ts = NOW - spanMs + Math.floor((i / n) * spanMs) + Math.floor(rnd() * 1000);
    // Every 50th event repeats an earlier event_id: duplicates inside a step and across steps.
    const id = i % 50 === 49 ? `ev-${i - 7}` : `ev-${i}`;
    const v = validateEvent(
      {
        event_id: id,
        event_type: type,
        user_id: user,
        session_id: `s-${user}-${Math.floor(ts / HOUR)}`,
        timestamp: ts,
        properties: { device_type: devices[Math.floor(rnd() * devices.length)], content_id: `c-${Math.floor(rnd() * 200)}` },
        context: { location: places[Math.floor(rnd() * places.length)] },
      },
      NOW,
    );
    if (!v.ok) throw new Error(v.detail);
    out.push({ record: v.record, hash: eventIdHash(id) });
  }
  return out;
}

function request(fold: Fold, firstOffset = 0): ApplyRequest {
  // Users with no hash yet: every scalar is written, the largest a user's writes get.
  return { topic: 'events.raw', partition: 0, firstOffset, nextOffset: firstOffset + fold.consumed, now: NOW, fold, binges: [], unparseable: 0, crossBatchDuplicates: 0, freshnessMs: 0, users: newUserWrites(fold.userFeatures) };
}

/** Fold `inputs` as the consumer does: step after step, each within `limits`. */
function steps(inputs: FoldInput[], limits: StepLimits): Fold[] {
  const out: Fold[] = [];
  for (let i = 0; i < inputs.length; ) {
    const f = foldEvents(inputs.slice(i), { ...foldOpts, limits });
    expect(f.consumed).toBeGreaterThan(0);
    out.push(f);
    i += f.consumed;
  }
  return out;
}

/** Sum of a family over folds: bucket → field → n. */
function merged(folds: Fold[], pick: (f: Fold) => Map<number, Map<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of folds) for (const [b, m] of pick(f)) for (const [k, n] of m) out[`${b}|${k}`] = (out[`${b}|${k}`] ?? 0) + n;
  return out;
}

describe('bounded Redis steps', () => {
  const limits: StepLimits = { maxArgs: 5000, maxKeys: 600, maxBytes: 120_000 };
  const inputs = events(20_000, 3 * DAY + 5 * HOUR);

  it('splits a batch spanning days into steps whose plans stay within every limit', () => {
    const folds = steps(inputs, limits);
    expect(folds.length).toBeGreaterThan(10);
    for (const f of folds) {
      const plan = buildPlan(cfg, keys, request(f));
      // The fold's cost is an upper bound of the plan it becomes, and both stay within the limits.
      expect(plan.args.length).toBeLessThanOrEqual(f.cost.args);
      expect(plan.keys.length).toBeLessThanOrEqual(f.cost.keys);
      expect(plan.bytes).toBeLessThanOrEqual(f.cost.bytes);
      expect(f.cost.args).toBeLessThanOrEqual(limits.maxArgs);
      expect(f.cost.keys).toBeLessThanOrEqual(limits.maxKeys);
      expect(f.cost.bytes).toBeLessThanOrEqual(limits.maxBytes);
    }
    // Steps are filled, not cut at the first sign of growth: most carry at least half their budget.
    const full = folds.slice(0, -1).filter((f) => f.cost.args >= limits.maxArgs / 2 || f.cost.keys >= limits.maxKeys / 2 || f.cost.bytes >= limits.maxBytes / 2);
    expect(full.length).toBeGreaterThanOrEqual(folds.length - 2);
  });

  it('the steps together count exactly what one unbounded fold counts', () => {
    const whole = foldEvents(inputs, foldOpts);
    const folds = steps(inputs, limits);
    expect(whole.consumed).toBe(inputs.length);
    // Duplicates whose first occurrence is in an earlier step are caught by Redis' dedupe sets, not by the fold:
    // the folds' events minus those equals the unbounded fold's.
    const crossStep = folds.reduce((n, f) => n + f.events, 0) - whole.events;
    const firstStepOf = new Map<string, number>();
    folds.forEach((f, i) => {
      for (const hashes of f.dedupe.values()) for (const h of hashes) if (!firstStepOf.has(h)) firstStepOf.set(h, i);
    });
    let repeated = 0;
    folds.forEach((f, i) => {
      for (const hashes of f.dedupe.values()) for (const h of hashes) if (firstStepOf.get(h)! < i) repeated += 1;
    });
    expect(crossStep).toBe(repeated);
    expect(folds.reduce((n, f) => n + f.events + f.duplicates + f.lateMinute, 0)).toBe(inputs.length);
    // Without the cross-step duplicates (what the dedupe sets remove) the counts add up to the same values.
    const dedupeAcross = (f: Fold, i: number): Fold => {
      const own = inputs.slice(folds.slice(0, i).reduce((n, g) => n + g.consumed, 0)).slice(0, f.consumed).filter((x) => !(firstStepOf.get(x.hash)! < i));
      return foldEvents(own, foldOpts);
    };
    const exact = folds.map(dedupeAcross);
    expect(merged(exact, (f) => f.counts.minute)).toEqual(merged([whole], (f) => f.counts.minute));
    expect(merged(exact, (f) => f.counts.second)).toEqual(merged([whole], (f) => f.counts.second));
    expect(merged(exact, (f) => f.topContent)).toEqual(merged([whole], (f) => f.topContent));
    const users = (fs: Fold[]) => {
      const out = new Map<string, Set<string>>();
      for (const f of fs) for (const [b, byDevice] of f.users.hour) for (const [d, u] of byDevice) for (const x of u) out.set(`${b}|${d}`, (out.get(`${b}|${d}`) ?? new Set()).add(x));
      return out;
    };
    expect(users(exact)).toEqual(users([whole]));
  });

  it('always takes at least one event, and without limits takes them all', () => {
    const tiny: StepLimits = { maxArgs: 1, maxKeys: 1, maxBytes: 1 };
    const f = foldEvents(inputs.slice(0, 10), { ...foldOpts, limits: tiny });
    expect(f.consumed).toBe(1);
    expect(foldEvents(inputs.slice(0, 10), foldOpts).consumed).toBe(10);
    expect(foldEvents([], { ...foldOpts, limits }).cost).toEqual(baseStepCost(foldOpts.keyPrefixBytes));
  });

  it('a live batch (8,000 events within 2 s of event time) fits in at most 2 steps with the default limits', () => {
    const live = events(8000, 2000);
    const folds = steps(live, { maxArgs: cfg.speed.stepMaxArgs, maxKeys: cfg.speed.stepMaxKeys, maxBytes: cfg.speed.stepMaxBytes });
    expect(folds.length).toBeLessThanOrEqual(2);
  });

  it('hands the plan to ioredis as one array, however many arguments it has', async () => {
    // A plan far beyond what a spread call takes (the crash of issue 17): one step over a whole batch.
    const fold = foldEvents(events(60_000, 3 * DAY), foldOpts);
    const plan = buildPlan(cfg, keys, request(fold));
    expect(plan.args.length + plan.keys.length).toBeGreaterThan(150_000);
    expect(() => Math.max(...(plan.args as unknown as number[]), ...(plan.args as unknown as number[]))).toThrow(RangeError);
    const calls: unknown[][] = [];
    const fake = {
      script: async () => 'sha',
      evalsha: async (...args: unknown[]) => {
        calls.push(args);
        return ['applied'];
      },
    } as unknown as Redis;
    await expect(new RedisApplier(fake, cfg).apply(request(fold))).resolves.toEqual({ status: 'applied' });
    expect(calls).toHaveLength(1);
    const [sha, numKeys, flat] = calls[0] as [string, number, unknown[]];
    expect(calls[0]).toHaveLength(3);
    expect([sha, numKeys]).toEqual(['sha', plan.keys.length]);
    expect(flat).toHaveLength(plan.keys.length + plan.args.length);
  });
});

describe('firstAtOrAfter', () => {
  const entries = [3, 4, 7, 8, 20].map((offset) => ({ offset }));
  it('finds where the unapplied part of a batch starts', () => {
    expect([-1, 3, 4, 5, 8, 20, 21].map((o) => firstAtOrAfter(entries, o))).toEqual([0, 0, 1, 2, 3, 4, 5]);
  });
});

export type { EventRecord };
