/** top_paths: per day, the most frequent event_type sequences before a session's first play, ranked (METRICS.md). Batch only. */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, type Sources } from './shared';

export interface TopPathsValue {
  paths: Array<{ rank: number; path: string; sessions: number }>;
}

/** The first $3 ranks of each day. */
const topPathsSql = `
  SELECT ${dayMsExpr('day')} AS bucket, rank, path, sessions
  FROM top_paths
  WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2 AND rank <= $3
  ORDER BY bucket, rank`;

export function topPathsMetric(src: Sources): MetricDef<{ limit: number }, TopPathsValue> {
  return dailyView(
    src,
    'top_paths',
    'top_paths',
    () => ({ paths: [] }),
    async (q) => {
      const rows = await src.batch.query(topPathsSql, [q.from, q.to, q.params.limit]);
      const out = new Map<number, TopPathsValue>();
      for (const r of rows) {
        const b = Number(r.bucket);
        const v = out.get(b) ?? { paths: [] };
        v.paths.push({ rank: num(r.rank), path: String(r.path), sessions: num(r.sessions) });
        out.set(b, v);
      }
      return [{ key: {}, values: out }];
    },
  );
}
