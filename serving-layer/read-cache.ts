/** Caches in front of a metric's layer reads; the merge sees the same definition, only cheaper to call. */
import type { BatchStore } from './batch-store';
import type { MetricDef } from './merge';

export class BatchCache {
  private version = -1;
  private entries = new Map<string, unknown>();
  constructor(private readonly max = 2000) {}
  get(version: number, key: string): unknown {
    if (version !== this.version) {
      this.entries.clear();
      this.version = version;
    }
    return this.entries.get(key);
  }
  set(key: string, value: unknown): void {
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, value);
  }
}

/**
 * Batch views change only when a sync publishes a new version, so a batch read
 * is cached per version: repeated dashboard queries cost a Redis round trip for
 * their speed part and nothing for their exact part.
 */
export function withBatchCache<P, V>(def: MetricDef<P, V>, store: BatchStore, cache: BatchCache, speedTtlMs: number): MetricDef<P, V> {
  const withSpeed = def.speed && speedTtlMs > 0 ? { ...def, speed: withSpeedCache(def.name, def.speed, speedTtlMs) } : def;
  if (!withSpeed.batch) return withSpeed;
  const inner = withSpeed.batch;
  return {
    ...withSpeed,
    batch: {
      ...inner,
      async read(q) {
        const key = JSON.stringify([def.name, q.granularity, q.from, q.to, q.boundary, q.params]);
        const version = store.version;
        const hit = cache.get(version, key) as Awaited<ReturnType<typeof inner.read>> | undefined;
        if (hit) return hit;
        const rows = await inner.read(q);
        if (store.version === version) cache.set(key, rows);
        return rows;
      },
    },
  };
}

/**
 * Identical speed reads within a short TTL share one Redis round trip: the
 * speed layer itself is only seconds fresh, and many dashboards polling the
 * same range would otherwise multiply the per-minute key reads.
 */
function withSpeedCache<P, V>(name: string, speed: NonNullable<MetricDef<P, V>['speed']>, ttlMs: number): NonNullable<MetricDef<P, V>['speed']> {
  const entries = new Map<string, { at: number; rows: Promise<Awaited<ReturnType<typeof speed.read>>> }>();
  return {
    ...speed,
    read(q) {
      const key = JSON.stringify([name, q.granularity, q.from, q.to, q.params]);
      const t = Date.now();
      const hit = entries.get(key);
      if (hit && t - hit.at < ttlMs) return hit.rows;
      if (entries.size > 1000) for (const [k, e] of entries) if (t - e.at >= ttlMs) entries.delete(k);
      const rows = speed.read(q);
      entries.set(key, { at: t, rows });
      rows.catch(() => entries.delete(key));
      return rows;
    },
  };
}
