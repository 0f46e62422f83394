/**
 * The batch layer's API, shaped for Temporal activities: every function takes a
 * JobContext (`jobContext(cfg, log, …)`: config, logger, the lake's S3 client,
 * optional heartbeat and AbortSignal), is a function of a period, and is
 * idempotent. Errors that retrying cannot fix extend NonRetryableBatchError.
 */
export type { JobContext, Period } from './context';
export { jobContext, parsePeriod, hoursOfDay, newRunId } from './context';
export {
  NonRetryableBatchError,
  CorruptObjectError,
  MissingHoursError,
  MissingPreviousDaysError,
  QualityCheckError,
  RawInputGoneError,
  BatchCancelledError,
  NON_RETRYABLE_ERROR_TYPES,
} from './errors';
export { runHourly, runHours, HOURLY_TABLES, type RunOptions } from './hourly';
export {
  runDaily,
  prepareDaily,
  runDailyShard,
  publishDaily,
  usableHours,
  withLocalRun,
  DAILY_TABLES,
  type DailyPlan,
  type DailyOptions,
  type LocalRun,
  type ShardResult,
} from './daily';
export { compactHour, type CompactionManifest, type CompactionRecord, type CompactionResult } from './compaction';
export { applyRetention, type RetentionOptions, type RetentionResult } from './retention';
export { computeWatermark, listDirty, listPublished, readPin } from './watermark';
export { assertRawComplete } from './raw-guard';
export { discardStaging } from './publish';
export { collectSupersededRuns, collectAfterPublish, periodFolderOf, type GcOptions, type GcResult } from './gc';
