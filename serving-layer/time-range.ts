/** The `from`/`to` of a metric query: epoch ms or ISO 8601 (UTC unless it says otherwise), defaulting to a span that ends now. */
import { BUCKET_MS, bucketStart, type Granularity } from '../common/contract';
import { MergeError } from './merge';

/** 9999-12-31T23:59:59.999Z: a time beyond it is a typo (or a fuzzer), and past 2^53 it is not even an exact integer. */
export const MAX_TIME_MS = 253_402_300_799_999;

const DEFAULT_SPAN: Record<Granularity, number> = { second: 60_000, minute: 3_600_000, hour: 86_400_000, day: 7 * 86_400_000 };

export function parseTime(raw: string, parameter: string): number {
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(/T.*(Z|[+-]\d{2}:\d{2})$/.test(raw) || !raw.includes('T') ? raw : `${raw}Z`);
  if (!Number.isFinite(ms) || ms > MAX_TIME_MS) throw new MergeError(parameter, `${parameter} is not a valid time: ${raw}`);
  return ms;
}

export interface RangeQs {
  from?: string;
  to?: string;
  granularity: Granularity;
}

export function rangeOf(qs: RangeQs, now: number): { from: number; to: number } {
  const g = qs.granularity;
  const to = qs.to !== undefined ? parseTime(qs.to, 'to') : bucketStart(now, g) + BUCKET_MS[g];
  const from = qs.from !== undefined ? parseTime(qs.from, 'from') : to - DEFAULT_SPAN[g];
  return { from, to };
}
