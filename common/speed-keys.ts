/**
 * The Redis key families of the speed layer: the contract between the speed
 * layer (the only writer) and the serving layer (a reader). Key names, the
 * encoding of hash fields, TTLs and the typed readers live here and nowhere
 * else: a writer takes its key names from `speedKeys`, a reader calls a reader.
 *
 * Every key is `<cfg.redis.keyPrefix>{<family>}:…`. The `{family}` hash tag puts
 * one family in one Redis Cluster slot, so a cluster can spread families over
 * nodes. (On one node the speed layer applies a batch to all families in one
 * Lua step; on a cluster that step would become one step per family, each with
 * its own offsets — not needed yet.) The prefix must not contain `{`.
 *
 * Buckets are event-time bucket starts in epoch ms (UTC). "Retention" R is
 * cfg.speed.retentionMs (default 48 h), R1 is cfg.speed.secondRetentionMs
 * (default 2 h); a bucketed key expires at (bucket end + R) so a bucket is
 * covered by the speed layer while bucket end + R > now + COVERAGE_MARGIN_MS. Keys
 * expire by event time whatever the batch layer did: a bucket the batch does not
 * hold by then is answered `none` (docs/operations.md, "When Redis loses data").
 * Redis must not evict (maxmemory-policy noeviction, its default): an evicted key
 * would read as a covered zero.
 *
 * | family  | key                                  | type   | content                                                      | expires            |
 * |---------|--------------------------------------|--------|--------------------------------------------------------------|--------------------|
 * | cnt     | {cnt}:second:<bucket>                | hash   | field `type|device|country` (any of them `ALL`) → events     | bucket end + R1    |
 * | cnt     | {cnt}:minute:<bucket>                | hash   | same fields                                                  | bucket end + R     |
 * | hll     | {hll}:<minute|hour|day>:<bucket>:<device or ALL> | HyperLogLog | distinct user_id                               | bucket end + R     |
 * | pb      | {pb}:minute:<bucket>                 | hash   | plays, pauses, completes, rebuffers                          | bucket end + R     |
 * | top     | {top}:hour:<bucket>                  | zset   | content_id scored by plays                                   | bucket end + R     |
 * | live    | {live}:users                         | zset   | user_id scored by latest event ts; trimmed to the last 5 min | (trimmed)          |
 * | live    | {live}:sessions                      | zset   | session_id scored by latest event ts; trimmed to 30 min      | (trimmed)          |
 * | binge   | {binge}:day:<YYYY-MM-DD>             | set    | users who binged that day (third complete on that day)       | day end + R        |
 * | binge   | {binge}:stream                       | stream | one entry per newly detected (user, day): user, day, ts      | MAXLEN ~ 100k      |
 * | binge   | {binge}:completes:<base64url(user_id)> | zset | the user's recent video_complete (member = event hash, score = ts) | R + 4 h after last write |
 * | dedup   | {dedup}:arrival:<epoch>              | set    | 8-byte hashes of the event_ids the collector received in that dedupe-window-long epoch (whatever their event time) | until the next epoch ends |
 * | ctl     | {ctl}:offsets:<topic>                | hash   | partition → next offset applied (the source of truth)        | never              |
 * | ctl     | {ctl}:stats                          | hash   | events, duplicates, late_minute, late_second, unparseable, batches | never        |
 * | ctl     | {ctl}:freshness                      | hash   | last_ms (max now − received_at of the last batch), at        | never              |
 * | alert   | {alert}:firing                       | hash   | rule → JSON {rule, since, value, threshold, message}         | never (removed when resolved) |
 * | alert   | {alert}:rebuild:<topic>              | hash   | partition → offset its rebuild must reach (Redis lost it)    | field removed when reached |
 * | dim     | {dim}:<name>:<YYYY-MM-DD>            | set    | the values of a dimension admitted that day (its bound)      | day end + R        |
 * | usr     | {usr}:<base64url(user_id)>           | hash   | one user's real-time features (userFeaturesOf; METRICS.md "User features") | R after the user's last applied event |
 * | —       | watermark                            | pub/sub channel | the lake watermark moved (published by the batch layer and a pin) | —     |
 *
 * Dedupe memory: measured 50–56 bytes per event_id on Redis 7.0 (a hashtable set
 * of 8-byte members), two epochs at most, so up to rate × 2 × window × 56 B:
 * ~3.4 GB at 100k events/s with the 5-minute default, were it not for the bound:
 * a set holds at most SPEED_DEDUPE_MAX_IDS ids (10 M: ≤ ~1.1 GB for both);
 * past it ids are counted but not remembered (docs/operations.md, "Scaling").
 * Intset shards would take 9 B per id but cost Redis ~3× the CPU (one call per
 * shard, about one per event): docs/benchmarks.md, "The speed layer's dedupe".
 *
 * Exactness: the `cnt`, `pb`, `top` and `binge` values equal the exact values
 * over the de-duplicated events of the covered buckets, except for a duplicate
 * event_id arriving later than the dedupe window (counted twice here, corrected
 * by the batch layer). `hll` values are estimates; their 95 % interval is
 * `hllErrorBound` (measured, not the textbook ±1.96 × 0.81 %).
 */
import type { Redis } from 'ioredis';
import type { Config } from './config';
import { ALL, BINGE_WINDOW_MS, BUCKET_MS, bucketsIn, bucketStart, dayOf, type EventType } from './contract';

/** Standard error of Redis' HyperLogLog (16384 registers): 1.04 / sqrt(16384). The textbook figure; see hllErrorBound. */
export const HLL_STANDARD_ERROR = 0.0081;

/**
 * The 95 % interval of a Redis HyperLogLog estimate, as measured by
 * bench/hll-error.ts (docs/benchmarks.md, "HyperLogLog error"): 1,000 trials per
 * cardinality up to 1,000, fewer above, on simulator ids and UUIDs. The textbook
 * ±1.96 × 0.81 % covers too little in two places: small counts, where the error is
 * a whole user or two (at 50 users one user is already 2 %: 92 % coverage), and
 * around 10⁵, where Redis' estimator moves between its corrections (p95 1.7 %).
 * So: at least ±2 users, ±1.4 % below 20,000 (measured p95 ≤ 1.22 %), ±1.9 %
 * from 20,000 (measured p95 ≤ 1.68 %).
 */
export function hllErrorBound(estimate: number): { relativeStdError: number; ci95: number } {
  const relative = estimate < 20_000 ? 0.014 : 0.019;
  const ci95 = Math.max(2, Math.ceil(relative * estimate));
  return { relativeStdError: relative / 1.96, ci95 };
}
/** Live activity windows. */
export const LIVE_USERS_WINDOW_MS = 5 * 60_000;
export const LIVE_SESSIONS_WINDOW_MS = 30 * 60_000;
export const BINGE_STREAM_MAXLEN = 100_000;

export type CountGranularity = 'second' | 'minute';
export type HllGranularity = 'minute' | 'hour' | 'day';

export const STAT_FIELDS = ['events', 'duplicates', 'late_minute', 'late_second', 'unparseable', 'batches'] as const;
export type StatField = (typeof STAT_FIELDS)[number];
// redis_data_lost is raised by the consumer itself (not the evaluator): a partition is being rebuilt from Kafka.
export const ALERT_RULES = ['error_rate', 'throughput', 'consumer_lag', 'latency', 'redis_data_lost'] as const;
export type AlertRule = (typeof ALERT_RULES)[number];

export const FAMILIES = ['cnt', 'hll', 'pb', 'top', 'live', 'binge', 'dedup', 'ctl', 'alert', 'dim', 'usr'] as const;
export type Family = (typeof FAMILIES)[number];

export interface SpeedKeys {
  /** A glob (SCAN MATCH, KEYS) for every key of a family, or of one of its sub-families (`minute`, `day`…); no family = every key of the prefix. */
  glob(family?: Family, sub?: string): string;
  counts(granularity: CountGranularity, bucket: number): string;
  hll(granularity: HllGranularity, bucket: number, deviceType: string): string;
  playback(minuteBucket: number): string;
  topContent(hourBucket: number): string;
  liveUsers(): string;
  liveSessions(): string;
  bingeDay(day: string): string;
  bingeStream(): string;
  /** One user's remembered completes; the id base64url-encoded, as in userFeatures. */
  bingeCompletes(userId: string): string;
  /** Event ids received in the arrival epoch starting at `epochStart` (SPEED_DEDUPE_WINDOW_MS long). */
  dedupe(epochStart: number): string;
  offsets(topic: string): string;
  stats(): string;
  /** The values of a dimension admitted on a day (its cardinality bound; see speed-layer/dimensions.ts). */
  dimension(name: string, day: string): string;
  freshness(): string;
  alerts(): string;
  rebuild(topic: string): string;
  /** Pub/sub channel announcing that the lake watermark moved (not a key: no family, no slot). */
  watermarkChannel(): string;
  /** One user's feature state. The id is base64url-encoded: whatever it holds, it cannot reach the hash tag, a glob or another user's key. */
  userFeatures(userId: string): string;
}

export function speedKeys(cfg: Config): SpeedKeys {
  const p = cfg.redis.keyPrefix;
  if (p.includes('{')) throw new Error(`REDIS_KEY_PREFIX must not contain "{" (it would become the hash tag): ${p}`);
  return {
    glob: (family, sub) => globEscape(p) + (family === undefined ? '' : `{${family}}:${sub === undefined ? '' : `${globEscape(sub)}:`}`) + '*',
    counts: (g, b) => `${p}{cnt}:${g}:${b}`,
    hll: (g, b, d) => `${p}{hll}:${g}:${b}:${d}`,
    playback: (b) => `${p}{pb}:minute:${b}`,
    topContent: (b) => `${p}{top}:hour:${b}`,
    liveUsers: () => `${p}{live}:users`,
    liveSessions: () => `${p}{live}:sessions`,
    bingeDay: (day) => `${p}{binge}:day:${day}`,
    bingeStream: () => `${p}{binge}:stream`,
    bingeCompletes: (u) => `${p}{binge}:completes:${Buffer.from(u, 'utf8').toString('base64url')}`,
    dedupe: (b) => `${p}{dedup}:arrival:${b}`,
    offsets: (topic) => `${p}{ctl}:offsets:${topic}`,
    stats: () => `${p}{ctl}:stats`,
    dimension: (name, day) => `${p}{dim}:${name}:${day}`,
    freshness: () => `${p}{ctl}:freshness`,
    alerts: () => `${p}{alert}:firing`,
    rebuild: (topic) => `${p}{alert}:rebuild:${topic}`,
    watermarkChannel: () => `${p}watermark`,
    userFeatures: (u) => `${p}{usr}:${Buffer.from(u, 'utf8').toString('base64url')}`,
  };
}

/** The hash field of a count: event_type × device_type × country, any of them `ALL`. */
export function countField(eventType: string, deviceType: string, country: string): string {
  // event_type and country never contain '|', so a device_type that does stays unambiguous.
  return `${eventType}|${deviceType}|${country}`;
}

export interface CountCell {
  eventType: string;
  deviceType: string;
  country: string;
}

/** The dimensions of a count field (countField's inverse). */
export function parseCountField(field: string): CountCell {
  // event_type and country never contain '|', so the device is what lies between the first and the last.
  const a = field.indexOf('|');
  const b = field.lastIndexOf('|');
  return { eventType: field.slice(0, a), deviceType: field.slice(a + 1, b), country: field.slice(b + 1) };
}

/** The 8 roll-up fields an event contributes to (each dimension as itself or ALL). */
export function countFields(eventType: string, deviceType: string, country: string): string[] {
  const out: string[] = [];
  for (const t of [eventType, ALL]) for (const d of [deviceType, ALL]) for (const c of [country, ALL]) out.push(countField(t, d, c));
  return out;
}

/** When a bucketed key of the family expires (absolute epoch ms). */
export function expiresAt(cfg: Config, unit: keyof typeof BUCKET_MS, bucket: number): number {
  const retention = unit === 'second' ? cfg.speed.secondRetentionMs : cfg.speed.retentionMs;
  return bucket + BUCKET_MS[unit] + retention;
}

/**
 * How long before its key expires a bucket stops counting as covered. A reader decides coverage at `now`
 * and reads Redis later (a pipeline, a busy Redis, a serving cache), and Redis expires keys by its own
 * clock: without the margin, a key expiring in between reads as absent, i.e. a zero labelled `speed`.
 */
export const COVERAGE_MARGIN_MS = 30_000;

/** Whether the speed layer still holds the bucket (its key will not have expired by design when read). */
export function covered(cfg: Config, unit: keyof typeof BUCKET_MS, bucket: number, now: number): boolean {
  return expiresAt(cfg, unit, bucket) > now + COVERAGE_MARGIN_MS;
}

const MAX_BUCKETS_PER_READ = 20_000;
function checkRange(unit: keyof typeof BUCKET_MS, from: number, to: number): void {
  if (!(to > from)) throw new RangeError(`empty range [${from}, ${to})`);
  if ((to - from) / BUCKET_MS[unit] > MAX_BUCKETS_PER_READ) throw new RangeError(`range spans more than ${MAX_BUCKETS_PER_READ} ${unit} buckets`);
}

export interface BucketValue {
  /** Bucket start, epoch ms. */
  bucket: number;
  /** Null when the bucket is not covered (expired by retention): unknown, not zero. */
  value: number | null;
  covered: boolean;
}

/*
 * Two kinds of reader: the `…At` readers take a list of bucket starts of the family's own unit and
 * return one raw value per bucket (absent = 0), leaving coverage to the caller (the serving layer's
 * merge decides it); the range readers below them check a range [from, to), enumerate its buckets
 * and say which are covered.
 */

/** Events of one count field per bucket; a dimension omitted is ALL. */
export async function readCountsAt(redis: Redis, cfg: Config, granularity: CountGranularity, buckets: number[], cell: Partial<CountCell> = {}): Promise<number[]> {
  const keys = speedKeys(cfg);
  const field = countField(cell.eventType ?? ALL, cell.deviceType ?? ALL, cell.country ?? ALL);
  const res = await pipelined<string | null>(redis, (p) => buckets.forEach((b) => p.hget(keys.counts(granularity, b), field)));
  return res.map((v) => Number(v ?? 0));
}

/** Every count field of each bucket (the full cross and all roll-ups), decoded. */
export async function readCountCellsAt(redis: Redis, cfg: Config, granularity: CountGranularity, buckets: number[]): Promise<Array<Array<CountCell & { events: number }>>> {
  const keys = speedKeys(cfg);
  const res = await pipelined<Record<string, string>>(redis, (p) => buckets.forEach((b) => p.hgetall(keys.counts(granularity, b))));
  return res.map((fields) => Object.entries(fields).map(([field, n]) => ({ ...parseCountField(field), events: Number(n) })));
}

/** HyperLogLog estimate of distinct users per bucket, for one device_type (ALL = every device). */
export async function readUsersAt(redis: Redis, cfg: Config, granularity: HllGranularity, buckets: number[], deviceType: string = ALL): Promise<number[]> {
  const keys = speedKeys(cfg);
  const res = await pipelined<number>(redis, (p) => buckets.forEach((b) => p.pfcount(keys.hll(granularity, b, deviceType))));
  return res.map(Number);
}

export type PlaybackCounts = Record<(typeof PLAYBACK_FIELDS)[keyof typeof PLAYBACK_FIELDS], number>;
const PLAYBACK_COUNTS = ['plays', 'pauses', 'completes', 'rebuffers'] as const;

/** Playback counters per minute bucket. */
export async function readPlaybackAt(redis: Redis, cfg: Config, minutes: number[]): Promise<PlaybackCounts[]> {
  const keys = speedKeys(cfg);
  const res = await pipelined<Array<string | null>>(redis, (p) => minutes.forEach((m) => p.hmget(keys.playback(m), ...PLAYBACK_COUNTS)));
  return res.map((values) => {
    const [plays, pauses, completes, rebuffers] = values.map((v) => Number(v ?? 0));
    return { plays, pauses, completes, rebuffers };
  });
}

/** Plays per content_id of each hour bucket: the whole set, not a top N (a day's ranking sums complete hours). */
export async function readContentPlaysAt(redis: Redis, cfg: Config, hours: number[]): Promise<Array<Map<string, number>>> {
  const keys = speedKeys(cfg);
  const res = await pipelined<string[]>(redis, (p) => hours.forEach((h) => p.zrangebyscore(keys.topContent(h), '-inf', '+inf', 'WITHSCORES')));
  return res.map(scoredMembers);
}

/** Each user's remembered video_complete events with ts in [from, to]: event hash → ts. */
export async function readCompletes(redis: Redis, cfg: Config, q: Array<{ userId: string; from: number; to: number }>): Promise<Array<Map<string, number>>> {
  const keys = speedKeys(cfg);
  const res = await pipelined<string[]>(redis, (p) => q.forEach((u) => p.zrangebyscore(keys.bingeCompletes(u.userId), u.from, u.to, 'WITHSCORES')));
  return res.map(scoredMembers);
}

/** The device_type values with a HyperLogLog key in a bucket (ALL and `other` included): what the dimension bound let in. */
export async function readUserDevices(redis: Redis, cfg: Config, granularity: HllGranularity, bucket: number): Promise<string[]> {
  const prefix = speedKeys(cfg).hll(granularity, bucketStart(bucket, granularity), '');
  const devices = new Set<string>();
  // SCAN, not KEYS: it does not block Redis; it may repeat a key, hence the set.
  for await (const batch of redis.scanStream({ match: `${globEscape(prefix)}*`, count: 1000 })) {
    for (const k of batch as string[]) devices.add(k.slice(prefix.length));
  }
  return [...devices].sort();
}

/** A literal for a Redis glob (MATCH, KEYS): `{` and `}` are not special there, `*?[]\` are. */
function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

/** Event counts per bucket in [from, to) for one combination of dimensions (omitted = ALL). */
export async function readEventCounts(
  redis: Redis,
  cfg: Config,
  q: { granularity: CountGranularity; from: number; to: number; eventType?: EventType; deviceType?: string; country?: string },
  now = Date.now(),
): Promise<BucketValue[]> {
  checkRange(q.granularity, q.from, q.to);
  const buckets = bucketsIn(q.from, q.to, q.granularity);
  const res = await readCountsAt(redis, cfg, q.granularity, buckets, q);
  return buckets.map((bucket, i) => {
    const isCovered = covered(cfg, q.granularity, bucket, now);
    return { bucket, covered: isCovered, value: isCovered ? res[i] : null };
  });
}

/** Every count field of one bucket (the full cross and all roll-ups), e.g. for a breakdown table. */
export async function readCountBreakdown(redis: Redis, cfg: Config, granularity: CountGranularity, bucket: number): Promise<Record<string, number>> {
  const raw = await redis.hgetall(speedKeys(cfg).counts(granularity, bucketStart(bucket, granularity)));
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
}

export interface Estimate {
  value: number;
  /** Relative standard error of the estimate (HyperLogLog). */
  relativeStandardError: number;
  exact: false;
}

/**
 * Distinct users per bucket in [from, to), and distinct users over the whole
 * range (an HLL union, not a sum). `deviceType` omitted = all devices.
 */
export async function readActiveUsers(
  redis: Redis,
  cfg: Config,
  q: { granularity: HllGranularity; from: number; to: number; deviceType?: string },
  now = Date.now(),
): Promise<{ buckets: Array<BucketValue & { relativeStandardError: number }>; distinct: Estimate | null }> {
  checkRange(q.granularity, q.from, q.to);
  const keys = speedKeys(cfg);
  const buckets = bucketsIn(q.from, q.to, q.granularity);
  const res = await readUsersAt(redis, cfg, q.granularity, buckets, q.deviceType ?? ALL);
  const coveredKeys = buckets.filter((b) => covered(cfg, q.granularity, b, now)).map((b) => keys.hll(q.granularity, b, q.deviceType ?? ALL));
  const union = coveredKeys.length > 0 ? await redis.pfcount(...coveredKeys) : null;
  return {
    buckets: buckets.map((bucket, i) => {
      const isCovered = covered(cfg, q.granularity, bucket, now);
      return { bucket, covered: isCovered, value: isCovered ? res[i] : null, relativeStandardError: HLL_STANDARD_ERROR };
    }),
    distinct: union === null ? null : { value: union, relativeStandardError: HLL_STANDARD_ERROR, exact: false },
  };
}

export interface Playback {
  bucket: number;
  covered: boolean;
  plays: number;
  pauses: number;
  completes: number;
  rebuffers: number;
  /** pauses / plays; null when plays = 0 (METRICS.md). */
  pauseRate: number | null;
  completionRate: number | null;
}

export const PLAYBACK_FIELDS = { video_play: 'plays', video_pause: 'pauses', video_complete: 'completes', rebuffer: 'rebuffers' } as const;

/** Playback counters per minute in [from, to). */
export async function readPlayback(redis: Redis, cfg: Config, q: { from: number; to: number }, now = Date.now()): Promise<Playback[]> {
  checkRange('minute', q.from, q.to);
  const buckets = bucketsIn(q.from, q.to, 'minute');
  const res = await readPlaybackAt(redis, cfg, buckets);
  return buckets.map((bucket, i) => {
    const { plays, pauses, completes, rebuffers } = res[i];
    return {
      bucket,
      covered: covered(cfg, 'minute', bucket, now),
      plays,
      pauses,
      completes,
      rebuffers,
      pauseRate: plays === 0 ? null : pauses / plays,
      completionRate: plays === 0 ? null : completes / plays,
    };
  });
}

/** content_id ranked by plays in the hour containing `hour` (ties: content_id descending, Redis' order). */
export async function readTopContent(redis: Redis, cfg: Config, q: { hour: number; limit?: number }): Promise<Array<{ contentId: string; plays: number }>> {
  const flat = await redis.zrevrange(speedKeys(cfg).topContent(bucketStart(q.hour, 'hour')), 0, (q.limit ?? 10) - 1, 'WITHSCORES');
  return [...scoredMembers(flat)].map(([contentId, plays]) => ({ contentId, plays }));
}

/** Users with an event in the last 5 minutes and sessions with an event in the last 30 minutes (by event time). */
export async function readLive(redis: Redis, cfg: Config, now = Date.now()): Promise<{ activeUsers5m: number; openSessions30m: number; at: number }> {
  const keys = speedKeys(cfg);
  const [users, sessions] = await Promise.all([
    redis.zcount(keys.liveUsers(), now - LIVE_USERS_WINDOW_MS, '+inf'),
    redis.zcount(keys.liveSessions(), now - LIVE_SESSIONS_WINDOW_MS, '+inf'),
  ]);
  return { activeUsers5m: users, openSessions30m: sessions, at: now };
}

/** Users detected binging on a day (`YYYY-MM-DD` or any ms within it). */
export async function readBinge(redis: Redis, cfg: Config, day: string | number): Promise<{ day: string; count: number; users: string[] }> {
  const d = typeof day === 'number' ? dayOf(day) : day;
  const users = (await redis.smembers(speedKeys(cfg).bingeDay(d))).sort();
  return { day: d, count: users.length, users };
}

export interface BingeNotice {
  id: string;
  userId: string;
  day: string;
  /** ts of the third complete. */
  ts: number;
}

/** The latest binge notices, newest first. */
export async function readBingeStream(redis: Redis, cfg: Config, count = 100): Promise<BingeNotice[]> {
  const entries = await redis.xrevrange(speedKeys(cfg).bingeStream(), '+', '-', 'COUNT', count);
  return entries.map(([id, fields]) => {
    const f: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
    return { id, userId: f.user, day: f.day, ts: Number(f.ts) };
  });
}

export interface Alert {
  rule: AlertRule;
  /** When it started firing (epoch ms). */
  since: number;
  value: number;
  threshold: number;
  message: string;
}

/** Alerts firing now. */
export async function readAlerts(redis: Redis, cfg: Config): Promise<Alert[]> {
  const raw = await redis.hgetall(speedKeys(cfg).alerts());
  return Object.values(raw)
    .map((v) => JSON.parse(v) as Alert)
    .sort((a, b) => a.rule.localeCompare(b.rule));
}

/** One alert if it is firing, else null. */
export async function readAlert(redis: Redis, cfg: Config, rule: AlertRule): Promise<Alert | null> {
  const raw = await redis.hget(speedKeys(cfg).alerts(), rule);
  return raw === null ? null : (JSON.parse(raw) as Alert);
}

/** Per partition of a topic being rebuilt after Redis lost it, the offset its rebuild must reach. */
export async function readRebuildTargets(redis: Redis, cfg: Config, topic: string): Promise<Record<number, number>> {
  const raw = await redis.hgetall(speedKeys(cfg).rebuild(topic));
  return Object.fromEntries(Object.entries(raw).map(([p, o]) => [Number(p), Number(o)]));
}

/** now − received_at of the newest applied batch, and when it was applied; null before the first batch. */
export async function readFreshness(redis: Redis, cfg: Config): Promise<{ lastMs: number; at: number } | null> {
  const raw = await redis.hmget(speedKeys(cfg).freshness(), 'last_ms', 'at');
  if (raw[0] === null || raw[1] === null) return null;
  return { lastMs: Number(raw[0]), at: Number(raw[1]) };
}

/** Next offset to apply, per partition of a topic (events before it are in Redis). */
export async function readOffsets(redis: Redis, cfg: Config, topic = cfg.kafka.rawTopic): Promise<Record<number, number>> {
  const raw = await redis.hgetall(speedKeys(cfg).offsets(topic));
  return Object.fromEntries(Object.entries(raw).map(([p, o]) => [Number(p), Number(o)]));
}

/** Cumulative speed-layer counters (events applied, duplicates skipped, late, unparseable, batches). */
export async function readStats(redis: Redis, cfg: Config): Promise<Record<StatField, number>> {
  const raw = await redis.hmget(speedKeys(cfg).stats(), ...STAT_FIELDS);
  return Object.fromEntries(STAT_FIELDS.map((f, i) => [f, Number(raw[i] ?? 0)])) as Record<StatField, number>;
}

/** One round trip for the commands `build` queues; a failed command fails the read. */
async function pipelined<T>(redis: Redis, build: (p: ReturnType<Redis['pipeline']>) => void): Promise<T[]> {
  const p = redis.pipeline();
  build(p);
  const res = await p.exec();
  if (!res) throw new Error('redis pipeline returned nothing');
  return res.map(([err, v]) => {
    if (err) throw err;
    return v as T;
  });
}

/** A WITHSCORES reply (member, score, member, score…) as member → score, in reply order. */
function scoredMembers(flat: string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < flat.length; i += 2) out.set(flat[i], Number(flat[i + 1]));
  return out;
}

/*
 * User features (METRICS.md "User features"): one hash per user, `{usr}:<base64url(user_id)>`, written by
 * the speed layer's step (computed by the consumer, speed-layer/user-state.ts; written by op U of apply.lua) and
 * read by readUserFeatures. Windows are rings of slots, so a hash never grows past 60 + 24 + 28 slot fields plus
 * 11 scalars whatever the user does (Redis keeps it a listpack), and a slot holding an older bucket than an
 * event's is reset by it, never trimmed by a scan:
 * | field          | value                                                      |
 * |----------------|------------------------------------------------------------|
 * | m<minute % 60> | `<minute index>:<events>:<plays>` (index = floor(ts / 60 s)) |
 * | h<hour % 24>   | `<hour index>:<events>:<plays>:<watch ms>`                 |
 * | d<day % 28>    | `<day index>` (a day the user was active)                  |
 * | fs, lt         | first and latest event ts the speed layer applied          |
 * | ss, sl, sn, sd | current session: start ts, last ts, events, device_type of its first event |
 * | lc, lct        | last content_id (of the latest event carrying one) and its ts |
 * | wo             | ts of the play or resume still open (no pause, stop, complete or play since) |
 * | v              | version: +1 per step that wrote the hash; a step writes only over the version it read |
 *
 * Memory: measured 1,382 bytes per user (MEMORY USAGE, Redis 7.0, 62 fields) for 60 events spread over the last
 * 24 h (bench/serving.ts --scenario features; docs/benchmarks.md, "User features"): ~1.4 GB per million users
 * active in the last R, the key's TTL (R after the user's last applied event), at most 123 fields whatever they do.
 */
export const USER_MINUTE_SLOTS = 60;
export const USER_HOUR_SLOTS = 24;
export const USER_DAY_SLOTS = 28;
/** A play interval longer than this (a stop that never came) counts this long. */
export const WATCH_INTERVAL_CAP_MS = 4 * 3_600_000;
/** Playback events as the user feature fold sees them: a play counts as a play; open starts a watch interval, close ends one (a new open closes the previous). */
export const WATCH_OPEN: ReadonlySet<string> = new Set(['video_play', 'video_resume']);
export const WATCH_CLOSE: ReadonlySet<string> = new Set(['video_pause', 'video_stop', 'video_complete']);

export interface UserFeatureState {
  /** Minute buckets (start ms) with their events and plays; only what the ring still holds. */
  minutes: Array<{ minute: number; events: number; plays: number }>;
  hours: Array<{ hour: number; events: number; plays: number; watchMs: number }>;
  /** Day starts (ms) the user was active on. */
  days: number[];
  firstSeen: number;
  lastEvent: number;
  session: { start: number; last: number; events: number; deviceType: string } | null;
  lastContent: { contentId: string; ts: number } | null;
  /** ts of the play still open, or null. */
  playingSince: number | null;
  /** Completes remembered by the binge detection in [now − 4 h, now], and whether the user binges today. */
  completes4h: number;
  bingeToday: boolean;
}

/** One user's feature state, or null when the speed layer holds none (never seen, or expired). One round trip. */
export async function readUserFeatures(redis: Redis, cfg: Config, userId: string, now = Date.now()): Promise<UserFeatureState | null> {
  const keys = speedKeys(cfg);
  const [raw, completes, binging] = await pipelined<unknown>(redis, (p) => {
    p.hgetall(keys.userFeatures(userId));
    p.zcount(keys.bingeCompletes(userId), now - BINGE_WINDOW_MS, '+inf');
    p.sismember(keys.bingeDay(dayOf(now)), userId);
  });
  const h = raw as Record<string, string>;
  if (h.fs === undefined) return null;
  const state: UserFeatureState = {
    minutes: [],
    hours: [],
    days: [],
    firstSeen: Number(h.fs),
    lastEvent: Number(h.lt),
    session: h.ss === undefined ? null : { start: Number(h.ss), last: Number(h.sl), events: Number(h.sn), deviceType: h.sd },
    lastContent: h.lc === undefined ? null : { contentId: h.lc, ts: Number(h.lct) },
    playingSince: h.wo === undefined || h.wo === '' ? null : Number(h.wo),
    completes4h: Number(completes),
    bingeToday: Number(binging) === 1,
  };
  for (const [field, value] of Object.entries(h)) {
    const v = value.split(':').map(Number);
    if (/^m\d+$/.test(field)) state.minutes.push({ minute: v[0] * BUCKET_MS.minute, events: v[1], plays: v[2] });
    else if (/^h\d+$/.test(field)) state.hours.push({ hour: v[0] * BUCKET_MS.hour, events: v[1], plays: v[2], watchMs: v[3] });
    else if (/^d\d+$/.test(field)) state.days.push(v[0] * BUCKET_MS.day);
  }
  state.days.sort((a, b) => a - b);
  return state;
}
