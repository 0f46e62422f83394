/**
 * The consumer-lag alerts of the serving layer (serving-layer/consumer-lag.ts)
 * on the real broker: a backlog nobody consumes fires the speed and lake lag
 * alerts from outside the consumers, commits resolve them, and an unreachable
 * Kafka is reported, not taken for "no lag".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient } from '../../common/clients';
import { loadConfig, type Config } from '../../common/config';
import { ConsumerLagMonitor } from '../../serving-layer/consumer-lag';
import { startServing } from '../../serving-layer/service';
import { isolatedConfig } from '../support/isolated';
import { highWatermarks } from './speed-support';

describe('consumer-lag alerts from the serving layer', () => {
  let cfg: Config;
  let monitor: ConsumerLagMonitor;

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-lag', { SPEED_ALERT_MAX_LAG: '10', LAKE_ALERT_MAX_LAG: '40', SPEED_ALERT_MAX_STALL_MS: '1000' });
    monitor = new ConsumerLagMonitor(cfg, { cacheMs: 500 });
    const producer = kafkaClient(cfg, 'lag-test').producer({ idempotent: true });
    await producer.connect();
    await producer.send({ topic: cfg.kafka.rawTopic, acks: -1, messages: Array.from({ length: 60 }, (_, i) => ({ key: `u${i % 9}`, value: `{"n":${i}}` })) });
    await producer.disconnect();
  });
  afterAll(async () => {
    await monitor?.close();
  });

  it('fires for both groups while nothing consumes, keeps since, and resolves the speed alert once the group committed the end', async () => {
    const t0 = Date.now();
    const first = await monitor.alerts(t0);
    expect(first.map((a) => [a.rule, a.value, a.threshold, a.since])).toEqual([
      ['speed_consumer_lag', 60, 10, t0],
      ['lake_consumer_lag', 60, 40, t0],
    ]);
    expect(first.every((a) => a.layer === 'serving')).toBe(true);
    // Cached: the same answer within cacheMs, whatever happens meanwhile.
    expect(await monitor.alerts(t0 + 100)).toBe(first);

    // No progress for longer than the stall limit: the stall alert joins.
    const later = await monitor.alerts(t0 + 2000);
    expect(later.map((a) => a.rule)).toEqual(['speed_consumer_lag', 'speed_consumer_stalled', 'lake_consumer_lag']);
    expect(later[0].since).toBe(t0);

    // The speed group commits the end of every partition (as the speed layer does after applying).
    const high = await highWatermarks(cfg);
    const admin = kafkaClient(cfg, 'lag-test-admin').admin();
    await admin.connect();
    try {
      await admin.setOffsets({ groupId: cfg.kafka.speedGroup, topic: cfg.kafka.rawTopic, partitions: Object.entries(high).map(([p, h]) => ({ partition: Number(p), offset: String(h) })) });
    } finally {
      await admin.disconnect();
    }
    const after = await monitor.alerts(t0 + 3000);
    expect(after.map((a) => [a.rule, a.value])).toEqual([['lake_consumer_lag', 60]]);
    expect((await monitor.read()).map((g) => [g.role, g.lag, g.committed])).toEqual([
      ['speed', 0, 60],
      ['lake', 60, 0],
    ]);
  });

  it('says so when Kafka cannot be asked, within its time bound', async () => {
    const down = new ConsumerLagMonitor(loadConfig({ ...process.env, KAFKA_BROKERS: '127.0.0.1:1' }), { timeoutMs: 1500 });
    try {
      const t = Date.now();
      const alerts = await down.alerts(t);
      expect(Date.now() - t).toBeLessThan(5000);
      expect(alerts).toMatchObject([{ rule: 'consumer_lag_unknown', layer: 'serving', since: t, value: 1, threshold: 0 }]);
      expect(alerts[0].message).toMatch(/cannot read consumer offsets from Kafka/);
      // Kafka's own error is for the log, not for API clients.
      expect(alerts[0].message).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|timeout|no answer/i);
      // Still failing later: the same incident, the same since.
      expect((await down.alerts(t + 10_000))[0].since).toBe(t);
    } finally {
      await down.close();
    }
  });

  it('reaches API clients through GET /v1/alerts of a running serving layer', async () => {
    const lagging = await isolatedConfig('speed-lag-api', { SPEED_ALERT_MAX_LAG: '5', LAKE_ALERT_MAX_LAG: '1000' });
    const producer = kafkaClient(lagging, 'lag-test-api').producer({ idempotent: true });
    await producer.connect();
    await producer.send({ topic: lagging.kafka.rawTopic, acks: -1, messages: Array.from({ length: 20 }, (_, i) => ({ key: `u${i}`, value: '{}' })) });
    await producer.disconnect();
    const serving = await startServing(lagging, { port: 0, host: '127.0.0.1' });
    try {
      const res = await fetch(`${serving.url}/v1/alerts`, { headers: { 'x-api-key': 'dev-read-key' } });
      expect(res.status).toBe(200);
      const { alerts } = (await res.json()) as { alerts: Array<{ rule: string; layer: string; value: number }> };
      expect(alerts.filter((a) => a.layer === 'serving' && a.rule.includes('consumer'))).toEqual([expect.objectContaining({ rule: 'speed_consumer_lag', value: 20 })]);
    } finally {
      await serving.stop();
    }
  });
});
