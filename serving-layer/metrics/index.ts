/**
 * The metrics the API serves, one file per metric, each declared once: its
 * batch SQL over the published views, its speed read through the typed readers
 * of common/speed-keys.ts, and the value of an empty covered bucket. The time
 * boundary between the two is not here: it is `merge` (../merge.ts).
 * The SQL reads like METRICS.md; dimension column names come from a fixed
 * list, values are always bound parameters. Adding a metric: CONTRIBUTING.md.
 */
export { eventsMetric, type EventsParams } from './events';
export { activeUsersMetric, type UsersParams } from './active-users';
export { playbackMetric, type PlaybackValue } from './playback';
export { topContentMetric, type TopContentValue } from './top-content';
export { dailySessionsMetric, type SessionsValue } from './daily-sessions';
export { retentionMetric, type RetentionValue } from './retention';
export { CLICK_BINS, clicksToPlayMetric, type ClicksToPlayValue } from './clicks-to-play';
export { topPathsMetric, type TopPathsValue } from './top-paths';
export { bingeMetric, type BingeValue } from './binge-users';
export { obtLevelError, obtMetric, type ObtParams, type ObtValue } from './obt';
export { lifecycleMetric, type LifecyclePeriod, type LifecycleValue } from './lifecycle';
export {
  RETENTION_DAYS,
  RETENTION_MODES,
  RETENTION_PERIODS,
  RETENTION_WEEKS,
  retentionByModeMetric,
  type RetentionModeValue,
  type RetentionParams,
} from './retention-variants';
export { churnRiskMetric, type ChurnRiskParams, type ChurnRiskValue } from './churn-risk';
export {
  FUNNEL_ADHOC_MAX_DAYS,
  FUNNEL_DIMENSIONS,
  FUNNEL_NOT_COMPUTED_REASON,
  FUNNEL_SPEED_REASON,
  declaredFunnel,
  funnelComputedDays,
  funnelMetric,
  funnelStepText,
  type FunnelDimension,
  type FunnelParams,
  type FunnelValue,
} from './funnel';
export { lakeFunnelEvents } from './funnel-events';
export { weekBuckets, weekStartOf } from './weeks';
export { EVENT_DIMENSIONS, OBT_DIMENSIONS, type BatchSource, type EventDimension, type ObtDimension, type Sources } from './shared';
export type { MetricDef } from '../merge';
export { userFeaturesReader, type UserFeatures } from './user-features';
