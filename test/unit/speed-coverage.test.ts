/**
 * Speed-key expiry against what the serving layer claims the speed layer covers:
 * every bucketed key a step writes expires at expiresAt(its family, its bucket),
 * and for every metric the speed layer answers, a bucket is claimed as covered only
 * while every key its read touches will outlive the read (COVERAGE_MARGIN_MS) —
 * otherwise an expired key would read as a zero labelled `speed` instead of `none`.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { BUCKET_MS, validateEvent, type Granularity } from '../../common/contract';
import { COVERAGE_MARGIN_MS, expiresAt, speedKeys } from '../../common/speed-keys';
import { activeUsersMetric, bingeMetric, eventsMetric, playbackMetric, topContentMetric, type Sources } from '../../serving-layer/metrics';
import { buildPlan } from '../../speed-layer/apply';
import { newUserWrites } from '../../speed-layer/user-state';
import { eventIdHash, foldEvents } from '../../speed-layer/fold';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const cfg = loadConfig({ REDIS_KEY_PREFIX: 't:coverage:' });
const keys = speedKeys(cfg);

describe('speed-key expiry', () => {
  it('every bucketed key of a step expires at expiresAt(family unit, bucket)', () => {
    const inputs = Array.from({ length: 400 }, (_, i) => {
      const ts = NOW - Math.floor((i / 400) * (cfg.speed.retentionMs + 2 * HOUR));
      const type = ['video_play', 'video_complete', 'click', 'rebuffer'][i % 4];
      const v = validateEvent({ event_id: `e-${i}`, event_type: type, user_id: `u-${i % 7}`, timestamp: ts, properties: { content_id: `c-${i % 5}` } }, NOW);
      if (!v.ok) throw new Error(v.detail);
      return { record: v.record, hash: eventIdHash(`e-${i}`) };
    });
    const fold = foldEvents(inputs, { now: NOW, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: cfg.speed.retentionMs });
    const plan = buildPlan(cfg, keys, { topic: 't', partition: 0, firstOffset: 0, nextOffset: inputs.length, now: NOW, fold, binges: [{ userId: 'u-1', day: '2026-11-29', ts: NOW - DAY }], unparseable: 0, crossBatchDuplicates: 0, freshnessMs: 0, users: newUserWrites(fold.userFeatures) });
    const p = cfg.redis.keyPrefix;
    const unitOf: Array<[RegExp, (m: RegExpMatchArray) => [keyof typeof BUCKET_MS, number]]> = [
      [/^\{cnt\}:(second|minute):(\d+)$/, (m) => [m[1] as 'second' | 'minute', Number(m[2])]],
      [/^\{hll\}:(minute|hour|day):(\d+):.+$/, (m) => [m[1] as 'minute' | 'hour' | 'day', Number(m[2])]],
      [/^\{pb\}:minute:(\d+)$/, (m) => ['minute', Number(m[1])]],
      [/^\{top\}:hour:(\d+)$/, (m) => ['hour', Number(m[1])]],
      [/^\{binge\}:day:(\d{4}-\d\d-\d\d)$/, (m) => ['day', Date.parse(`${m[1]}T00:00:00Z`)]],
    ];
    const seen = new Set<string>();
    for (let i = 4; i < plan.args.length; ) {
      const [code, keyIndex, exp, n] = plan.args.slice(i, i + 4).map(String);
      const name = plan.keys[Number(keyIndex) - 1].slice(p.length);
      for (const [re, f] of unitOf) {
        const m = name.match(re);
        if (!m) continue;
        const [unit, bucket] = f(m);
        expect({ name, code, exp: Number(exp) }).toEqual({ name, code, exp: expiresAt(cfg, unit, bucket) });
        seen.add(name.split(':')[0]);
      }
      i += 4 + Number(n);
    }
    expect([...seen].sort()).toEqual(['{binge}', '{cnt}', '{hll}', '{pb}', '{top}']);
  });

  it('a bucket is claimed as covered only while every key its speed read touches outlives the read', () => {
    const src = { cfg, batch: null, redis: null } as unknown as Sources;
    // The keys each metric's speed read touches for one bucket, as (family unit, sub-bucket).
    const minutes = (b: number, g: Granularity) => Array.from({ length: BUCKET_MS[g] / BUCKET_MS.minute }, (_, i) => ['minute', b + i * BUCKET_MS.minute] as const);
    const hours = (b: number, g: Granularity) => Array.from({ length: BUCKET_MS[g] / HOUR }, (_, i) => ['hour', b + i * HOUR] as const);
    const metrics = [
      { def: eventsMetric(src), reads: (b: number, g: Granularity) => (g === 'second' ? [['second', b] as const] : minutes(b, g)) },
      { def: activeUsersMetric(src), reads: (b: number, g: Granularity) => [[g, b] as const] },
      { def: playbackMetric(src), reads: minutes },
      { def: topContentMetric(src), reads: hours },
      { def: bingeMetric(src), reads: (b: number) => [['day', b] as const] },
    ];
    let claimed = 0;
    for (const { def, reads } of metrics) {
      const speed = def.speed!;
      for (const g of speed.granularities) {
        const size = BUCKET_MS[g];
        const retention = g === 'second' ? cfg.speed.secondRetentionMs : cfg.speed.retentionMs;
        // Buckets around the retention edge, read at instants around each key's expiry.
        const edge = Math.floor((NOW - retention) / size) * size;
        for (let b = edge - 3 * size; b <= edge + 2 * size; b += size) {
          const firstExpiry = Math.min(...reads(b, g).map(([u, sub]) => expiresAt(cfg, u, sub)));
          for (const now of [firstExpiry - COVERAGE_MARGIN_MS - 1, firstExpiry - COVERAGE_MARGIN_MS, firstExpiry - 1, firstExpiry, NOW]) {
            const covers = speed.covers(b, g, now);
            expect({ metric: def.name, g, b, now, covers }).toEqual({ metric: def.name, g, b, now, covers: firstExpiry > now + COVERAGE_MARGIN_MS });
            if (covers) claimed += 1;
          }
        }
      }
    }
    expect(claimed).toBeGreaterThan(20);
  });
});

