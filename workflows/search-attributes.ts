/**
 * Search attributes of batch runs (registered by infra/ when the dev server
 * starts): the Temporal UI and `npm run runs` find runs by kind and period.
 */
import { SearchAttributeType, defineSearchAttributeKey, type SearchAttributePair } from '@temporalio/common';

export const BATCH_KIND = defineSearchAttributeKey('BatchKind', SearchAttributeType.KEYWORD);
export const BATCH_PERIOD = defineSearchAttributeKey('BatchPeriod', SearchAttributeType.KEYWORD);
/** Set by the server on every run a schedule starts: the time it was due, even when it ran late (catch-up). */
export const SCHEDULED_START_TIME = defineSearchAttributeKey('TemporalScheduledStartTime', SearchAttributeType.DATETIME);

/** Kinds shown in BatchKind; the scheduled triggers get their own so a period lists its real run once. */
export type BatchKind = 'hourly' | 'daily' | 'backfill' | 'reconcile' | 'compact' | 'retention' | 'scheduled-hourly' | 'scheduled-daily' | 'erasure';

export function batchAttributes(kind: BatchKind, period?: string): SearchAttributePair[] {
  const pairs: SearchAttributePair[] = [{ key: BATCH_KIND, value: kind }];
  if (period !== undefined) pairs.push({ key: BATCH_PERIOD, value: period });
  return pairs;
}
