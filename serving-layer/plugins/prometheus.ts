/**
 * The serving layer's Prometheus metrics and GET /metrics. Wrapped in
 * fastify-plugin: the latency hook must see every route of every scope.
 */
import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BatchStore } from '../batch-store';

export interface ServingMetrics {
  registry: Registry;
  httpDuration: Histogram<'route' | 'method' | 'status'>;
  bucketsServed: Counter<'metric' | 'source'>;
}

export function servingMetrics(store: BatchStore, opts: { defaultMetrics?: boolean } = {}): ServingMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const httpDuration = new Histogram({
    name: 'serving_http_request_duration_seconds',
    help: 'Query API latency by route and status',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const bucketsServed = new Counter({
    name: 'serving_buckets_total',
    help: 'Buckets answered, by metric and source layer',
    labelNames: ['metric', 'source'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'serving_watermark_end_ms',
    help: 'Batch watermark applied by the merge (epoch ms; 0 = none)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      const w = store.watermark();
      this.set({ kind: 'hourly' }, w.hourly.end ?? 0);
      this.set({ kind: 'daily' }, w.daily.end ?? 0);
      this.set({ kind: 'pinned' }, w.pinnedEnd ?? 0);
    },
  });
  new Gauge({
    name: 'serving_batch_version',
    help: 'Syncs of the batch views that changed what queries see',
    registers: [registry],
    collect() {
      this.set(store.version);
    },
  });
  new Gauge({
    name: 'serving_batch_sync_ok',
    help: '1 when the last sync of the batch views succeeded',
    registers: [registry],
    collect() {
      this.set(store.lastError === null ? 1 : 0);
    },
  });
  return { registry, httpDuration, bucketsServed };
}

const prometheus: FastifyPluginAsync<{ metrics: ServingMetrics }> = async (app, { metrics }) => {
  app.addHook('onResponse', async (req, reply) => {
    metrics.httpDuration.observe({ route: req.routeOptions.url ?? 'unknown', method: req.method, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  app.get('/metrics', { config: { access: 'none' }, schema: { hide: true } }, async (_req, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};

export const prometheusPlugin = fp(prometheus, { name: 'serving-prometheus', fastify: '5.x' });
