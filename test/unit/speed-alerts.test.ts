import { describe, expect, it } from 'vitest';
import { evaluateRules, type AlertSample } from '../../speed-layer/alerts';

const T = { maxErrorRatePct: 5, minEventsPerSec: 100, maxLag: 1000, maxLatencyMs: 5000 };
const NOW = 1_700_000_000_000;
const s = (at: number, rawEnd: number, dlqEnd: number, lag = 0, freshness: AlertSample['freshness'] = { lastMs: 200, at }): AlertSample => ({ at, rawEnd, dlqEnd, lag, freshness });
const byRule = (samples: AlertSample[], now = NOW, t = T) => Object.fromEntries(evaluateRules(samples, t, now).map((o) => [o.rule, o]));

describe('evaluateRules', () => {
  it('fires nothing on a healthy window', () => {
    const r = byRule([s(NOW - 60_000, 0, 0), s(NOW, 60_000, 100)]);
    expect(Object.values(r).filter((o) => o.firing)).toEqual([]);
    expect(r.throughput.value).toBe(1000);
    expect(r.error_rate.value).toBeCloseTo(100 / 60_100);
  });

  it('fires error_rate above 5 % of dead letters, not at 5 %', () => {
    expect(byRule([s(NOW - 10_000, 0, 0), s(NOW, 9500, 500)]).error_rate.firing).toBe(false);
    const r = byRule([s(NOW - 10_000, 0, 0), s(NOW, 9400, 600)]);
    expect(r.error_rate.firing).toBe(true);
    expect(r.error_rate.value).toBeCloseTo(0.06);
    expect(r.error_rate.threshold).toBe(0.05);
  });

  it('fires throughput below the floor, never with one sample or with the floor at 0', () => {
    expect(byRule([s(NOW - 10_000, 0, 0), s(NOW, 500, 0)]).throughput.firing).toBe(true);
    expect(byRule([s(NOW, 500, 0)]).throughput.firing).toBe(false);
    expect(byRule([s(NOW - 10_000, 0, 0), s(NOW, 0, 0)], NOW, { ...T, minEventsPerSec: 0 }).throughput.firing).toBe(false);
  });

  it('fires consumer_lag above the ceiling', () => {
    expect(byRule([s(NOW, 0, 0, 1000)]).consumer_lag.firing).toBe(false);
    expect(byRule([s(NOW, 0, 0, 1001)]).consumer_lag.firing).toBe(true);
  });

  it('fires latency when the last batch was slow, or when messages wait and nothing was applied for > 5 s', () => {
    expect(byRule([s(NOW, 0, 0, 0, { lastMs: 6000, at: NOW })]).latency.firing).toBe(true);
    expect(byRule([s(NOW, 0, 0, 0, { lastMs: 300, at: NOW - 60_000 })]).latency.firing).toBe(false); // idle, nothing waiting
    const stuck = byRule([s(NOW, 0, 0, 10, { lastMs: 300, at: NOW - 6000 })]);
    expect(stuck.latency.firing).toBe(true);
    expect(stuck.latency.value).toBe(6000);
  });
});
