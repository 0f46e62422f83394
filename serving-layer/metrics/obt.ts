/**
 * obt: the daily one big table (daily_aggregates_with_dimensions) at one of its grouping
 * sets (METRICS.md). Batch only.
 */
import type { DuckDBValue } from '@duckdb/node-api';
import { ALL } from '../../common/contract';
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, dimensionConditions, num, OBT_DIMENSIONS, toSeries, type ObtDimension, type Sources } from './shared';

export interface ObtParams {
  groupBy: ObtDimension[];
  filters: Partial<Record<ObtDimension, string>>;
}

export interface ObtValue {
  total_events: number;
  total_installs: number;
  total_views: number;
  total_plays: number;
  total_sessions: number;
  unique_users: number;
}

/** The grouping sets of the one big table (METRICS.md), as the set of dimensions that are not ALL. */
const OBT_LEVELS = [['device_type', 'app_version', 'country'], ['device_type', 'country'], ['device_type'], ['country'], []].map((l) => l.sort().join(','));

/** The dimensions a query pins to a value or groups by must form one of the table's grouping sets; null when they do. */
export function obtLevelError(p: ObtParams): string | null {
  const specific = OBT_DIMENSIONS.filter((d) => p.groupBy.includes(d) || (p.filters[d] !== undefined && p.filters[d] !== ALL));
  if (OBT_LEVELS.includes([...specific].sort().join(','))) return null;
  return `the one big table has no roll-up by (${specific.join(', ')}); its levels are (device_type, app_version, country), (device_type, country), (device_type), (country) and the day total`;
}

/** `where` holds the day range and dimensionConditions. */
const obtSql = (where: readonly string[]) => `
  SELECT ${dayMsExpr('day')} AS bucket, device_type, app_version, country,
         total_events, total_installs, total_views, total_plays, total_sessions, unique_users
  FROM daily_aggregates_with_dimensions
  WHERE ${where.join(' AND ')}`;

export function obtMetric(src: Sources): MetricDef<ObtParams, ObtValue> {
  return dailyView(
    src,
    'obt',
    'daily_aggregates_with_dimensions',
    () => ({ total_events: 0, total_installs: 0, total_views: 0, total_plays: 0, total_sessions: 0, unique_users: 0 }),
    async (q) => {
      const where = [`${dayMsExpr('day')} >= $1`, `${dayMsExpr('day')} < $2`];
      const params: DuckDBValue[] = [q.from, q.to];
      dimensionConditions(OBT_DIMENSIONS, q.params, where, params);
      const rows = await src.batch.query(obtSql(where), params);
      return toSeries(rows, q.params.groupBy, (r) => ({
        total_events: num(r.total_events),
        total_installs: num(r.total_installs),
        total_views: num(r.total_views),
        total_plays: num(r.total_plays),
        total_sessions: num(r.total_sessions),
        unique_users: num(r.unique_users),
      }));
    },
  );
}
