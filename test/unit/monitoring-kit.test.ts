/**
 * Every metric the monitoring kit's alerts and dashboard read is one the code registers, so a
 * renamed metric breaks this test instead of silently emptying a panel or muting an alert.
 * (test/integration/monitoring.test.ts checks the same names against real scrapes, MinIO's included.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../common/config';
import { lakeWriterMetrics } from '../../batch-layer/lake-writer/metrics';
import { collectorMetrics } from '../../ingestion/collector/metrics';
import { servingMetrics } from '../../serving-layer/plugins/prometheus';
import type { BatchStore } from '../../serving-layer/batch-store';
import { speedMetrics } from '../../speed-layer/metrics';
import { alertRules, kitQueries, metricNames, seriesNames } from '../support/monitoring-kit';

function registered(): Map<string, string> {
  const lake = new Registry();
  collectDefaultMetrics({ register: lake, prefix: 'lake_writer_' });
  lakeWriterMetrics(lake);
  const registries = [collectorMetrics({ defaultMetrics: true }).registry, speedMetrics({ defaults: true }).registry, lake, servingMetrics({} as BatchStore, { defaultMetrics: true }).registry];
  const names = new Map<string, string>();
  for (const r of registries) for (const m of r.getMetricsAsArray()) for (const n of seriesNames(m.name, String(m.type))) names.set(n, 'code');
  // The worker builds its metrics as it starts (workflows/service.ts), against Temporal: read from its source.
  const worker = fs.readFileSync(path.join(REPO_ROOT, 'workflows/service.ts'), 'utf8');
  for (const m of worker.matchAll(/new (Counter|Gauge|Histogram)\(\{\s*name: '([a-z_]+)'/g)) for (const n of seriesNames(m[2], m[1].toLowerCase())) names.set(n, 'workflows/service.ts');
  return names;
}

describe('the monitoring kit reads metrics that exist', () => {
  it('finds the metric names of PromQL expressions', () => {
    expect(metricNames('sum by (le) (rate(a_bucket{x="y"}[5m])) > 0.5 and on (job) b offset 1h')).toEqual(['a_bucket', 'b']);
    expect(metricNames('(time() - w_ms{kind=~"hourly|daily"} / 1000) > 36 * 3600 and up == 0')).toEqual(['w_ms', 'up']);
    expect(metricNames('histogram_quantile(0.95, sum by (le, route) (rate(h_bucket[$__rate_interval])))')).toEqual(['h_bucket']);
  });

  it('every alert and every dashboard query names a metric the processes register', () => {
    const names = registered();
    expect(names.has('collector_events_accepted_total') && names.has('batch_activity_seconds_bucket')).toBe(true);
    const queries = kitQueries();
    expect(queries.length).toBeGreaterThan(20);
    const missing: string[] = [];
    for (const q of queries) {
      const used = metricNames(q.expr);
      expect(used.length, `${q.where} reads no metric`).toBeGreaterThan(0);
      // `up` is Prometheus' own; minio_* are MinIO's (the integration test scrapes them).
      for (const n of used) if (n !== 'up' && !n.startsWith('minio_') && !names.has(n)) missing.push(`${q.where}: ${n}`);
    }
    expect(missing).toEqual([]);
  });

  it('has the alerts the platform raises itself, and one for each service under it', () => {
    const alerts = alertRules().groups.flatMap((g) => g.rules.map((r) => r.alert));
    for (const a of ['CollectorErrorRate', 'ThroughputBelowFloor', 'SpeedConsumerLag', 'SpeedConsumerStalled', 'FreshnessSlow', 'BatchLag', 'BatchSyncFailing', 'BatchRunsFailing', 'KafkaUnreachable', 'RedisApplyFailing', 'MinioDown', 'ProcessDown']) {
      expect(alerts).toContain(a);
    }
  });

  it('documents a runbook line for every alert', () => {
    const ops = fs.readFileSync(path.join(REPO_ROOT, 'docs/operations.md'), 'utf8');
    for (const g of alertRules().groups) for (const r of g.rules) expect(ops, r.alert).toMatch(new RegExp(`\\*\\*${r.alert}\\*\\*`));
  });
});
