/**
 * binge_users: per day, the users who binged (≥ 3 video_complete within 4 hours, the third that day; METRICS.md).
 * Batch: binge_users. Speed: the day's binge set.
 */
import { dayOf } from '../../common/contract';
import { covered, readBinge } from '../../common/speed-keys';
import type { MetricDef } from '../merge';
import { dayMsExpr, num, type Sources } from './shared';

export interface BingeValue {
  count: number;
  /** Up to `limit` users, ascending. */
  users: string[];
}

/** Each day's users ascending, with the day's count on every row. */
const bingeUsersSql = `
  SELECT ${dayMsExpr('day')} AS bucket, count(*) OVER (PARTITION BY day) AS n, user_id
  FROM binge_users
  WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2
  ORDER BY bucket, user_id`;

export function bingeMetric(src: Sources): MetricDef<{ limit: number }, BingeValue> {
  const { cfg } = src;
  return {
    name: 'binge_users',
    granularities: ['day'],
    zero: () => ({ count: 0, users: [] }),
    batch: {
      granularities: ['day'],
      period: () => 'daily',
      async read(q) {
        if (!src.batch.has('binge_users')) return [];
        const rows = await src.batch.query(bingeUsersSql, [q.from, q.to]);
        const out = new Map<number, BingeValue>();
        for (const r of rows) {
          const b = Number(r.bucket);
          const v = out.get(b) ?? { count: num(r.n), users: [] };
          if (v.users.length < q.params.limit) v.users.push(String(r.user_id));
          out.set(b, v);
        }
        return [{ key: {}, values: out }];
      },
    },
    speed: {
      granularities: ['day'],
      covers: (b, _g, now) => covered(cfg, 'day', b, now),
      async read(q) {
        const days = await Promise.all(q.buckets.map((b) => readBinge(src.redis, cfg, dayOf(b))));
        return [{ key: {}, values: new Map(days.map((d, i) => [q.buckets[i], { count: d.count, users: d.users.slice(0, q.params.limit) }])) }];
      },
    },
  };
}
