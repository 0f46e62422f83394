/** daily_sessions: sessions, their durations, bounce rate and events per session, per day (METRICS.md). Batch only. */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, numOrNull, toSeries, type Sources } from './shared';

export interface SessionsValue {
  sessions: number;
  avg_duration_ms: number | null;
  median_duration_ms: number | null;
  bounce_rate: number | null;
  avg_events_per_session: number | null;
}

/** One device_type ($3, ALL = every device), or every device separately. */
const dailySessionsSql = (groupByDevice: boolean) => `
  SELECT ${dayMsExpr('day')} AS bucket, device_type,
         sessions, avg_duration_ms, median_duration_ms, bounce_rate, avg_events_per_session
  FROM daily_sessions
  WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2
    AND ${groupByDevice ? "device_type <> 'ALL'" : 'device_type = $3'}`;

export function dailySessionsMetric(src: Sources): MetricDef<{ deviceType: string; groupByDevice: boolean }, SessionsValue> {
  return dailyView(
    src,
    'daily_sessions',
    'daily_sessions',
    () => ({ sessions: 0, avg_duration_ms: null, median_duration_ms: null, bounce_rate: null, avg_events_per_session: null }),
    async (q) => {
      const rows = await src.batch.query(dailySessionsSql(q.params.groupByDevice), q.params.groupByDevice ? [q.from, q.to] : [q.from, q.to, q.params.deviceType]);
      return toSeries(rows, q.params.groupByDevice ? ['device_type'] : [], (r) => ({
        sessions: num(r.sessions),
        avg_duration_ms: numOrNull(r.avg_duration_ms),
        median_duration_ms: numOrNull(r.median_duration_ms),
        bounce_rate: numOrNull(r.bounce_rate),
        avg_events_per_session: numOrNull(r.avg_events_per_session),
      }));
    },
  );
}
