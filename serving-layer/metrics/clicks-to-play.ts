/** clicks_to_play: per day, sessions with and without a play and the clicks before the first play (METRICS.md). Batch only. */
import type { MetricDef } from '../merge';
import { dailyView, dayMsExpr, num, numOrNull, toSeries, type Sources } from './shared';

export const CLICK_BINS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10+'] as const;
export interface ClicksToPlayValue {
  play_sessions: number;
  no_play_sessions: number;
  avg_clicks_to_play: number | null;
  histogram: Array<{ clicks: string; sessions: number }>;
}

const clicksToPlaySql = `
  SELECT ${dayMsExpr('day')} AS bucket, * EXCLUDE (day)
  FROM clicks_to_play
  WHERE ${dayMsExpr('day')} >= $1 AND ${dayMsExpr('day')} < $2`;

export function clicksToPlayMetric(src: Sources): MetricDef<Record<string, never>, ClicksToPlayValue> {
  return dailyView(
    src,
    'clicks_to_play',
    'clicks_to_play',
    () => ({ play_sessions: 0, no_play_sessions: 0, avg_clicks_to_play: null, histogram: CLICK_BINS.map((clicks) => ({ clicks, sessions: 0 })) }),
    async (q) => {
      const rows = await src.batch.query(clicksToPlaySql, [q.from, q.to]);
      return toSeries(rows, [], (r) => ({
        play_sessions: num(r.play_sessions),
        no_play_sessions: num(r.no_play_sessions),
        avg_clicks_to_play: numOrNull(r.avg_clicks_to_play),
        histogram: CLICK_BINS.map((clicks) => ({ clicks, sessions: num(r[clicks === '10+' ? 'clicks_10_plus' : `clicks_${clicks}`]) })),
      }));
    },
  );
}
