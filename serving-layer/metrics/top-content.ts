/**
 * top_content: content_id ranked by plays per bucket (METRICS.md; ties by content_id).
 * Batch: hourly_playback's per-content rows. Speed: the per-hour play zsets, summed whole.
 */
import { BUCKET_MS, bucketStart, type Granularity } from '../../common/contract';
import { readContentPlaysAt } from '../../common/speed-keys';
import type { MetricDef } from '../merge';
import { bucketExpr, num, speedCovers, type Sources } from './shared';

export interface TopContentValue {
  items: Array<{ content_id: string; plays: number }>;
}

/** Per bucket, the $3 content_ids with the most plays (ties: content_id ascending). */
const topContentSql = (g: Granularity) => `
  WITH per_bucket AS (
    SELECT ${bucketExpr('hour_start_ms', g)} AS bucket, content_id, CAST(sum(plays) AS BIGINT) AS plays
    FROM hourly_playback
    WHERE content_id IS NOT NULL AND content_id <> 'ALL' AND hour_start_ms >= $1 AND hour_start_ms < $2
    GROUP BY ALL HAVING sum(plays) > 0)
  SELECT * FROM per_bucket
  QUALIFY row_number() OVER (PARTITION BY bucket ORDER BY plays DESC, content_id) <= $3
  ORDER BY bucket, plays DESC, content_id`;

/** The same ranking over summed speed-layer plays. */
function rank(m: Map<string, number>, limit: number): TopContentValue['items'] {
  return [...m]
    .filter(([, plays]) => plays > 0)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, limit)
    .map(([content_id, plays]) => ({ content_id, plays }));
}

export function topContentMetric(src: Sources): MetricDef<{ limit: number }, TopContentValue> {
  const { cfg } = src;
  return {
    name: 'top_content',
    granularities: ['hour', 'day'],
    zero: () => ({ items: [] }),
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_playback')) return [];
        const rows = await src.batch.query(topContentSql(q.granularity), [q.from, q.to, q.params.limit]);
        const out = new Map<number, TopContentValue>();
        for (const r of rows) {
          const b = Number(r.bucket);
          const v = out.get(b) ?? { items: [] };
          v.items.push({ content_id: String(r.content_id), plays: num(r.plays) });
          out.set(b, v);
        }
        return [{ key: {}, values: out }];
      },
    },
    speed: {
      granularities: ['hour', 'day'],
      covers: speedCovers(cfg, 'hour'),
      async read(q) {
        const hours = q.buckets.flatMap((b) => Array.from({ length: BUCKET_MS[q.granularity] / BUCKET_MS.hour }, (_, i) => b + i * BUCKET_MS.hour));
        // Whole sets, not the top N of each hour: a day's ranking must sum complete hours.
        const res = await readContentPlaysAt(src.redis, cfg, hours);
        const sums = new Map<number, Map<string, number>>();
        hours.forEach((h, i) => {
          const b = bucketStart(h, q.granularity);
          const m = sums.get(b) ?? new Map<string, number>();
          for (const [content, plays] of res[i]) m.set(content, (m.get(content) ?? 0) + plays);
          sums.set(b, m);
        });
        return [{ key: {}, values: new Map([...sums].map(([b, m]) => [b, { items: rank(m, q.params.limit) }])) }];
      },
    },
  };
}
