/**
 * playback: plays, pauses, completes, rebuffers and the two rates per bucket (METRICS.md).
 * Batch: the content_id = 'ALL' rows of hourly_playback. Speed: the per-minute counters.
 */
import { bucketStart, type Granularity } from '../../common/contract';
import { readPlaybackAt } from '../../common/speed-keys';
import type { MetricDef } from '../merge';
import { bucketExpr, minutesOf, num, speedCovers, toSeries, type Sources } from './shared';

export interface PlaybackValue {
  plays: number;
  pauses: number;
  completes: number;
  rebuffers: number;
  /** pauses / plays; null when plays = 0. */
  pause_rate: number | null;
  completion_rate: number | null;
}

function playbackValue(plays: number, pauses: number, completes: number, rebuffers: number): PlaybackValue {
  return {
    plays,
    pauses,
    completes,
    rebuffers,
    pause_rate: plays === 0 ? null : pauses / plays,
    completion_rate: plays === 0 ? null : completes / plays,
  };
}

/** hourly_playback's all-content rows summed into the bucket. */
const playbackSql = (g: Granularity) => `
  SELECT ${bucketExpr('hour_start_ms', g)} AS bucket,
         CAST(sum(plays) AS BIGINT) AS plays, CAST(sum(pauses) AS BIGINT) AS pauses,
         CAST(sum(completes) AS BIGINT) AS completes, CAST(sum(rebuffers) AS BIGINT) AS rebuffers
  FROM hourly_playback
  WHERE content_id = 'ALL' AND hour_start_ms >= $1 AND hour_start_ms < $2
  GROUP BY ALL`;

export function playbackMetric(src: Sources): MetricDef<Record<string, never>, PlaybackValue> {
  const { cfg } = src;
  return {
    name: 'playback',
    granularities: ['minute', 'hour', 'day'],
    zero: () => playbackValue(0, 0, 0, 0),
    batch: {
      granularities: ['hour', 'day'],
      period: () => 'hourly',
      async read(q) {
        if (!src.batch.has('hourly_playback')) return [];
        const rows = await src.batch.query(playbackSql(q.granularity), [q.from, q.to]);
        return toSeries(rows, [], (r) => playbackValue(num(r.plays), num(r.pauses), num(r.completes), num(r.rebuffers)));
      },
    },
    speed: {
      granularities: ['minute', 'hour', 'day'],
      covers: speedCovers(cfg, 'minute'),
      async read(q) {
        const subs = q.buckets.flatMap((b) => minutesOf(b, q.granularity));
        const res = await readPlaybackAt(src.redis, cfg, subs);
        const sums = new Map<number, PlaybackValue>();
        subs.forEach((m, i) => {
          const b = bucketStart(m, q.granularity);
          const acc = sums.get(b) ?? playbackValue(0, 0, 0, 0);
          const c = res[i];
          sums.set(b, playbackValue(acc.plays + c.plays, acc.pauses + c.pauses, acc.completes + c.completes, acc.rebuffers + c.rebuffers));
        });
        return [{ key: {}, values: sums }];
      },
    },
  };
}
