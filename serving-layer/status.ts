/**
 * What replies say about the layers themselves: the batch watermark, the speed
 * layer's freshness, and a failed sync of the batch views. The watermark is the
 * one the merge applies (`boundaryOf`), so a reply never claims exact data the
 * merge would not serve as exact.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Config } from '../common/config';
import type { Logger } from '../common/log';
import { readFreshness } from '../common/speed-keys';
import type { BatchStore } from './batch-store';
import { boundaryOf, type WatermarkView } from './merge';

/** W per period kind as the merge applies it: min(computed, pin), and nothing exact (null) when that ends at or before the start. */
export function appliedWatermark(w: WatermarkView) {
  const hourly = boundaryOf(w, 'hourly');
  const daily = boundaryOf(w, 'daily');
  return { hourly_start: hourly.start, hourly_end: hourly.end, daily_start: daily.start, daily_end: daily.end, pinned_end: w.pinnedEnd };
}

export class ServingStatus {
  private seenSyncError: { message: string; id: string } | null = null;

  constructor(
    private readonly cfg: Config,
    private readonly store: BatchStore,
    private readonly redis: Redis,
    private readonly now: () => number,
    private readonly log?: Logger,
  ) {}

  /**
   * A failed sync's message is S3's or DuckDB's: replies say only that it failed and
   * under which id the log has the cause (logged once per distinct failure).
   */
  syncError(): string | null {
    const e = this.store.lastError;
    if (e === null) return null;
    if (this.seenSyncError?.message !== e) {
      this.seenSyncError = { message: e, id: randomUUID().slice(0, 8) };
      this.log?.error({ syncErrorId: this.seenSyncError.id, err: e }, 'batch views could not be refreshed');
    }
    return `batch_sync_failed: the batch views could not be refreshed (serving log, syncErrorId ${this.seenSyncError.id})`;
  }

  watermark() {
    const lake = this.store.lakeWatermark;
    return {
      ...appliedWatermark(this.store.watermark()),
      lake_hourly_end: lake?.hourlyEnd ?? null,
      lake_daily_end: lake?.dailyEnd ?? null,
      lake_updated_at: lake?.updatedAt ?? null,
      synced_at: this.store.syncedAt,
      sync_error: this.syncError(),
    };
  }

  async freshness() {
    const t = this.now();
    // Unknown (null) while Redis fails over: a metric reply must not fail for its freshness note.
    const f = await readFreshness(this.redis, this.cfg).catch(() => null);
    const hourlyEnd = boundaryOf(this.store.watermark(), 'hourly').end;
    return {
      speed_lag_ms: f?.lastMs ?? null,
      speed_applied_at: f?.at ?? null,
      speed_age_ms: f ? t - f.at : null,
      speed_retention_ms: this.cfg.speed.retentionMs,
      batch_lag_ms: hourlyEnd === null ? null : t - hourlyEnd,
    };
  }
}
