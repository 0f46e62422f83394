/** What the route plugins share: the clients, the clock, the status replies and the metrics. */
import type { Redis } from 'ioredis';
import type { Config } from '../../common/config';
import type { Logger } from '../../common/log';
import type { BatchStore } from '../batch-store';
import type { ServingMetrics } from '../plugins/prometheus';
import * as S from '../schemas';
import type { ServingStatus } from '../status';

export interface ServingContext {
  cfg: Config;
  redis: Redis;
  store: BatchStore;
  log?: Logger;
  now: () => number;
  status: ServingStatus;
  metrics: ServingMetrics;
}

/** What every keyed route may also answer: no or wrong key, over its rate, a dependency down (with a request id). */
export const GUARDED = { 401: S.errorSchema, 429: S.errorSchema, 503: S.errorSchema } as const;
