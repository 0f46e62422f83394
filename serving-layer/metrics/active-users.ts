/**
 * active_users: distinct users per bucket for one device_type or ALL (METRICS.md). Batch:
 * hourly_users by the hour, the daily one big table by the day (which also has a country).
 * Speed: the HyperLogLog of each bucket, an estimate (per device_type only).
 */
import { ALL } from '../../common/contract';
import { covered, HLL_STANDARD_ERROR, hllErrorBound, readUsersAt, type HllGranularity } from '../../common/speed-keys';
import type { MetricDef } from '../merge';
import { dayMsExpr, num, toSeries, type Sources } from './shared';

export interface UsersParams {
  deviceType: string;
  /** Not ALL: daily only, the one big table's (country) and (device_type, country) levels. */
  country: string;
}

/** Hourly distinct users of one device_type (ALL = every device). */
const hourlyUsersSql = `
  SELECT hour_start_ms AS bucket, users
  FROM hourly_users
  WHERE hour_start_ms >= $1 AND hour_start_ms < $2 AND device_type = $3`;

/** Daily distinct users of one device_type and country, from the one big table's (device_type, country) level and its roll-ups. */
const dailyUsersSql = `
  SELECT ${dayMsExpr('day')} AS bucket, unique_users
  FROM daily_aggregates_with_dimensions
  WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2
    AND device_type = $3 AND app_version = 'ALL' AND country = $4`;

export function activeUsersMetric(src: Sources): MetricDef<UsersParams, number> {
  const { cfg } = src;
  return {
    name: 'active_users',
    granularities: ['minute', 'hour', 'day'],
    zero: () => 0,
    estimateOf: (v) => v,
    batch: {
      granularities: ['hour', 'day'],
      // DAU is a distinct count over the day: it comes from the daily one big table, not a sum of hours.
      period: (g) => (g === 'day' ? 'daily' : 'hourly'),
      async read(q) {
        if (q.granularity === 'hour') {
          if (!src.batch.has('hourly_users')) return [];
          const rows = await src.batch.query(hourlyUsersSql, [q.from, q.to, q.params.deviceType]);
          return toSeries(rows, [], (r) => num(r.users));
        }
        if (!src.batch.has('daily_aggregates_with_dimensions')) return [];
        const rows = await src.batch.query(dailyUsersSql, [q.from, q.to, q.params.deviceType, q.params.country]);
        return toSeries(rows, [], (r) => num(r.unique_users));
      },
    },
    speed: {
      granularities: ['minute', 'hour', 'day'],
      // The HyperLogLogs are kept per device_type, not per country.
      supports: (p) => p.country === ALL,
      relativeStdError: HLL_STANDARD_ERROR,
      errorOf: hllErrorBound,
      covers: (b, g, now) => covered(cfg, g, b, now),
      async read(q) {
        // Per-bucket estimates only: readActiveUsers' range-wide union is not part of a bucketed answer.
        const res = await readUsersAt(src.redis, cfg, q.granularity as HllGranularity, q.buckets, q.params.deviceType);
        return [{ key: {}, values: new Map(q.buckets.map((b, i) => [b, res[i]])) }];
      },
    },
  };
}
