/**
 * A bound on the distinct values of a free-text dimension the speed layer turns
 * into keys and fields. `device_type` is whatever the client sends (up to 64
 * characters): each new value is one more HyperLogLog key per minute, hour and
 * day and more count fields, so one client sending random device types could
 * create millions of keys. Per UTC day of event time, the first N values seen
 * are admitted (N = SPEED_MAX_DEVICE_TYPES_PER_DAY); later new values fold into
 * `other` and are counted (speed_dimension_overflow_total). Nothing is dropped:
 * totals stay exact, only the breakdown loses the overflowing names — in the
 * speed layer alone; the batch layer keeps every value.
 *
 * The admitted set lives in Redis (`{dim}:<name>:<day>`), so every consumer
 * of the group, and a consumer replaying after a restart, makes the same choice
 * for a value already admitted. `country` needs no guard: it is derived as a
 * two-letter code or `unknown` (at most 677 values).
 */
import type { Redis } from 'ioredis';
import type { Config } from '../common/config';
import { BUCKET_MS, dayOf, type EventRecord } from '../common/contract';
import type { Logger } from '../common/log';
import type { SpeedKeys } from '../common/speed-keys';

export const OTHER = 'other';

/** Admit each candidate if it is already a member or the set has room; returns the admitted ones. */
const ADMIT = `
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local out = {}
for i = 3, #ARGV do
  local v = ARGV[i]
  if redis.call('SISMEMBER', key, v) == 1 then
    out[#out + 1] = v
  elseif redis.call('SCARD', key) < cap then
    redis.call('SADD', key, v)
    out[#out + 1] = v
  end
end
redis.call('PEXPIREAT', key, ARGV[2])
return out
`;

/** Per day: values known admitted, and values known refused (the set was full when they came). */
interface DayState {
  /** Days since the epoch (UTC). */
  dayIndex: number;
  admitted: Set<string>;
  refused: Set<string>;
}

export class DimensionGuard {
  private readonly days = new Map<number, DayState>();
  private sha: string | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly cfg: Config,
    private readonly keys: SpeedKeys,
    private readonly log: Logger,
    private readonly onOverflow: (dimension: string, events: number) => void = () => {},
  ) {}

  /**
   * Rewrites, in place, the device_type of records whose value is over the day's
   * bound to `other`. Returns how many records were rewritten.
   */
  async bound(records: EventRecord[]): Promise<number> {
    const max = this.cfg.speed.maxDeviceTypesPerDay;
    // Per event only a division and set lookups (this runs on every consumed event); day strings are
    // made once per day that has a value not seen before.
    const unknown = new Map<number, Set<string>>();
    let anyRefused = false;
    for (const r of records) {
      if (r.device_type === OTHER) continue;
      const st = this.state(Math.floor(r.ts / BUCKET_MS.day));
      if (st.admitted.has(r.device_type)) continue;
      if (st.refused.has(r.device_type)) {
        anyRefused = true;
        continue;
      }
      let s = unknown.get(st.dayIndex);
      if (!s) unknown.set(st.dayIndex, (s = new Set()));
      s.add(r.device_type);
    }
    for (const [dayIndex, values] of unknown) {
      const st = this.state(dayIndex);
      const day = dayOf(dayIndex * BUCKET_MS.day);
      const list = [...values];
      const expireAt = (dayIndex + 1) * BUCKET_MS.day + this.cfg.speed.retentionMs;
      for (let i = 0; i < list.length; i += 1000) {
        const chunk = list.slice(i, i + 1000);
        const admitted = new Set((await this.run(this.keys.dimension('device_type', day), [String(max), String(expireAt), ...chunk])) as string[]);
        for (const v of chunk) (admitted.has(v) ? st.admitted : st.refused).add(v);
        const refusedNow = chunk.filter((v) => !admitted.has(v));
        if (refusedNow.length > 0) {
          anyRefused = true;
          this.log.warn({ day, max, refused: refusedNow.length, sample: refusedNow.slice(0, 5) }, `more than ${max} device_type values on ${day}: new ones are counted as "${OTHER}" in the speed layer (SPEED_MAX_DEVICE_TYPES_PER_DAY)`);
        }
      }
    }
    let rewritten = 0;
    if (anyRefused) {
      for (const r of records) {
        if (r.device_type !== OTHER && this.state(Math.floor(r.ts / BUCKET_MS.day)).refused.has(r.device_type)) {
          r.device_type = OTHER;
          rewritten += 1;
        }
      }
    }
    if (rewritten > 0) this.onOverflow('device_type', rewritten);
    this.forgetOldDays();
    return rewritten;
  }

  private state(dayIndex: number): DayState {
    let st = this.days.get(dayIndex);
    if (!st) this.days.set(dayIndex, (st = { dayIndex, admitted: new Set(), refused: new Set() }));
    return st;
  }

  /** Days past the speed retention are never written again: drop their cache. */
  private forgetOldDays(): void {
    if (this.days.size < 16) return;
    const oldest = Math.floor((Date.now() - this.cfg.speed.retentionMs) / BUCKET_MS.day) - 1;
    for (const day of this.days.keys()) if (day < oldest) this.days.delete(day);
  }

  private async run(key: string, args: string[]): Promise<unknown> {
    this.sha ??= (await this.redis.script('LOAD', ADMIT)) as string;
    try {
      return await this.redis.evalsha(this.sha, 1, key, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      this.sha = (await this.redis.script('LOAD', ADMIT)) as string;
      return this.redis.evalsha(this.sha, 1, key, ...args);
    }
  }
}
