/**
 * events: events per bucket, by any of event_type, device_type, country and app_version
 * (METRICS.md). Batch: sums of hourly_events. Speed: the per-second and per-minute count
 * hashes, which keep no app_version.
 */
import type { DuckDBValue } from '@duckdb/node-api';
import { ALL, bucketStart, type Granularity } from '../../common/contract';
import { readCountCellsAt, readCountsAt } from '../../common/speed-keys';
import type { MetricDef, SeriesKey } from '../merge';
import { bucketExpr, dimensionConditions, EVENT_DIMENSIONS, minutesOf, num, speedCovers, toSeries, type EventDimension, type Sources } from './shared';

export interface EventsParams {
  groupBy: EventDimension[];
  filters: Partial<Record<EventDimension, string>>;
}

/** hourly_events summed into the bucket per grouped dimension; `where` holds the range and dimensionConditions. */
const eventsSql = (g: Granularity, groupBy: readonly string[], where: readonly string[]) => `
  SELECT ${bucketExpr('hour_start_ms', g)} AS bucket${groupBy.map((k) => `, ${k}`).join('')},
         CAST(sum(events) AS BIGINT) AS events
  FROM hourly_events
  WHERE ${where.join(' AND ')}
  GROUP BY ALL`;

/** The speed layer's count fields are event_type × device_type × country. */
const SPEED_DIMENSIONS = ['event_type', 'device_type', 'country'] as const;
type SpeedDimension = (typeof SPEED_DIMENSIONS)[number];

export function eventsMetric(src: Sources): MetricDef<EventsParams, number> {
  const { cfg } = src;
  return {
    name: 'events',
    granularities: ['second', 'minute', 'hour', 'day'],
    zero: () => 0,
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_events')) return [];
        const where: string[] = ['hour_start_ms >= $1', 'hour_start_ms < $2'];
        const params: DuckDBValue[] = [q.from, q.to];
        dimensionConditions(EVENT_DIMENSIONS, q.params, where, params);
        const rows = await src.batch.query(eventsSql(q.granularity, q.params.groupBy, where), params);
        return toSeries(rows, q.params.groupBy, (r) => num(r.events));
      },
    },
    speed: {
      granularities: ['second', 'minute', 'hour', 'day'],
      supports: (p) => !p.groupBy.includes('app_version') && p.filters.app_version === undefined,
      covers: speedCovers(cfg, 'minute'),
      async read(q) {
        const unit = q.granularity === 'second' ? 'second' : 'minute';
        const subs = q.buckets.flatMap((b) => (unit === 'second' ? [b] : minutesOf(b, q.granularity)));
        const { filters, groupBy } = q.params;
        const want = (dim: SpeedDimension, value: string): boolean => {
          const f = filters[dim];
          if (f !== undefined) return value === f;
          return groupBy.includes(dim) ? value !== ALL : value === ALL;
        };
        const values = new Map<string, { key: SeriesKey; values: Map<number, number> }>();
        const add = (key: SeriesKey, bucket: number, n: number) => {
          const id = JSON.stringify(key);
          let s = values.get(id);
          if (!s) values.set(id, (s = { key, values: new Map() }));
          s.values.set(bucket, (s.values.get(bucket) ?? 0) + n);
        };
        if (groupBy.length === 0) {
          // One field per sub-bucket: the roll-up the filters name.
          const res = await readCountsAt(src.redis, cfg, unit, subs, { eventType: filters.event_type, deviceType: filters.device_type, country: filters.country });
          subs.forEach((b, i) => add({}, bucketStart(b, q.granularity), res[i]));
        } else {
          const res = await readCountCellsAt(src.redis, cfg, unit, subs);
          subs.forEach((b, i) => {
            for (const cell of res[i]) {
              const dims: Record<SpeedDimension, string> = { event_type: cell.eventType, device_type: cell.deviceType, country: cell.country };
              if (!SPEED_DIMENSIONS.every((d) => want(d, dims[d]))) continue;
              const key: SeriesKey = {};
              for (const d of groupBy) key[d] = dims[d as SpeedDimension];
              add(key, bucketStart(b, q.granularity), cell.events);
            }
          });
        }
        return [...values.values()];
      },
    },
  };
}
