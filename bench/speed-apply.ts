/**
 * What the speed layer's Redis step costs Redis per event, with the per-user feature state on and off
 * (issue 12; SPEED_USER_FEATURES). No Kafka, no consumer: the steps go straight through RedisApplier.
 *
 *   npx tsx bench/speed-apply.ts [--steps 20] [--events 2000] [--users 20000] [--features on,off]
 *
 * The simulator writes --users users' events over the last hour; each step takes the next event of
 * --events different users in rotation, so a step touches one user per event (high user cardinality), each
 * user's events in their own order. The steps are folded as the consumer folds them (speed-layer/fold.ts)
 * and applied one after another under a Redis prefix of the bench's own (deleted at the end). Warm-up
 * steps first give every user a hash, so the measured steps update existing state. Reported per mode:
 * Redis CPU µs per event (INFO cpu used_cpu_user + used_cpu_sys, the whole process, diffed around the
 * measured steps), the script's own µs per event (INFO commandstats, evalsha), and the step's wall time
 * (the RedisApplier.apply round trip). Redis is shared: run it on a quiet machine (or under the lock).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { redisClient } from '../common/clients';
import { loadConfig } from '../common/config';
import { validateEvent, type EventRecord } from '../common/contract';
import { speedKeys } from '../common/speed-keys';
import { simulate } from '../ingestion/simulator/generate';
import { RedisApplier } from '../speed-layer/apply';
import { eventIdHash, foldEvents, type FoldInput } from '../speed-layer/fold';

process.env.LOG_LEVEL ??= 'warn';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '20' },
    warmup: { type: 'string' },
    events: { type: 'string', default: '2000' },
    users: { type: 'string', default: '20000' },
    features: { type: 'string', default: 'on,off' },
    seed: { type: 'string', default: '12' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(`Usage: npx tsx bench/speed-apply.ts [options]

The speed layer's Redis step (RedisApplier) on simulator-shaped folds, with the per-user feature
state on and off: Redis CPU µs per event and the step's wall time.

Options:
  --steps <n>       measured steps per mode (20)
  --warmup <n>      steps before measuring (default: users / events, so every user has a hash)
  --events <n>      events per step, each of a different user (2000)
  --users <n>       simulated users, over the last hour (20000; at least --events)
  --features <list> modes to run, in order: on, off or both (on,off)
  --seed <n>        simulator seed (12)
  --json <file>     also write the results as JSON
  -h, --help        this text
`);
  process.exit(0);
}

const steps = Number(args.steps);
const perStep = Number(args.events);
const userCount = Number(args.users);
const warmup = args.warmup === undefined ? Math.ceil(userCount / perStep) : Number(args.warmup);
const modes = args.features!.split(',').map((m) => m.trim());
if (perStep > userCount) throw new Error(`--events (${perStep}) must not exceed --users (${userCount}): each event of a step is another user's`);
if (modes.some((m) => m !== 'on' && m !== 'off')) throw new Error(`--features is a list of on and off, not ${args.features}`);

/** Each user's valid events, in event-time order. */
function simulatedUsers(now: number): EventRecord[][] {
  const byUser = new Map<string, EventRecord[]>();
  for (const send of simulate({ seed: Number(args.seed), users: userCount, startMs: now - 3_600_000, endMs: now })) {
    if (send.kind !== 'valid') continue;
    const v = validateEvent(JSON.parse(send.line), now);
    if (!v.ok) continue;
    let mine = byUser.get(v.record.user_id);
    if (mine === undefined) byUser.set(v.record.user_id, (mine = []));
    mine.push(v.record);
  }
  const users = [...byUser.values()];
  for (const events of users) events.sort((a, b) => a.ts - b.ts);
  return users;
}

/** Step after step: the next event of `perStep` different users, the users in rotation. */
function* stepsOf(users: EventRecord[][]): Generator<EventRecord[]> {
  const next = new Array<number>(users.length).fill(0);
  let u = 0;
  for (;;) {
    const step: EventRecord[] = [];
    for (let tried = 0; step.length < perStep && tried < users.length; tried++, u = (u + 1) % users.length) {
      if (next[u] < users[u].length) step.push(users[u][next[u]++]);
    }
    if (step.length < perStep) return;
    yield step;
  }
}

async function redisCpu(redis: Redis): Promise<{ cpu: number; scriptUsec: number; scriptCalls: number }> {
  const info = (await redis.info('cpu')) + (await redis.info('commandstats'));
  const num = (re: RegExp): number => Number(re.exec(info)?.[1] ?? 0);
  return {
    cpu: num(/used_cpu_user:([\d.]+)/) + num(/used_cpu_sys:([\d.]+)/),
    scriptUsec: num(/cmdstat_evalsha:calls=\d+,usec=(\d+)/),
    scriptCalls: num(/cmdstat_evalsha:calls=(\d+)/),
  };
}

interface ModeResult {
  features: string;
  steps: number;
  events: number;
  redisUsPerEvent: number;
  scriptUsPerEvent: number;
  stepWallMs: { mean: number; p50: number; max: number };
  foldMsMean: number;
}

async function run(mode: string, users: EventRecord[][], now: number): Promise<ModeResult> {
  const cfg = loadConfig({ ...process.env, REDIS_KEY_PREFIX: `bench:speed-apply:${process.pid}:${mode}:`, SPEED_USER_FEATURES: mode === 'on' ? 'true' : 'false' });
  const redis = redisClient(cfg);
  const applier = new RedisApplier(redis, cfg);
  let offset = 0;
  let events = 0;
  const walls: number[] = [];
  const folds: number[] = [];
  let start: Awaited<ReturnType<typeof redisCpu>> | undefined;
  let i = 0;
  try {
    for (const records of stepsOf(users)) {
      if (i === warmup) start = await redisCpu(redis);
      if (i === warmup + steps) break;
      const t0 = performance.now();
      const inputs: FoldInput[] = records.map((record) => ({ record, hash: eventIdHash(record.event_id) }));
      const fold = foldEvents(inputs, { now, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: cfg.speed.retentionMs, userFeatures: cfg.speed.userFeatures });
      const t1 = performance.now();
      const res = await applier.apply({ topic: 'bench', partition: 0, firstOffset: offset, nextOffset: offset + records.length, now, fold, binges: [], unparseable: 0, crossBatchDuplicates: 0, freshnessMs: null });
      const t2 = performance.now();
      if (res.status !== 'applied') throw new Error(`step ${i}: ${JSON.stringify(res)}`);
      offset += records.length;
      if (i >= warmup) {
        events += fold.events;
        walls.push(t2 - t1);
        folds.push(t1 - t0);
      }
      i += 1;
    }
    if (start === undefined || walls.length < steps) throw new Error(`the simulated hour holds ${i} steps, fewer than warm-up + ${steps}: more --users or fewer --steps`);
    const end = await redisCpu(redis);
    const sorted = [...walls].sort((a, b) => a - b);
    const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    return {
      features: mode,
      steps: walls.length,
      events,
      redisUsPerEvent: ((end.cpu - start.cpu) * 1e6) / events,
      scriptUsPerEvent: (end.scriptUsec - start.scriptUsec) / events,
      stepWallMs: { mean: mean(walls), p50: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] },
      foldMsMean: mean(folds),
    };
  } finally {
    for await (const batch of redis.scanStream({ match: speedKeys(cfg).glob(), count: 1000 })) if ((batch as string[]).length > 0) await redis.del(...(batch as string[]));
    redis.disconnect();
  }
}

const now = Date.now();
const users = simulatedUsers(now);
const total = users.reduce((a, e) => a + e.length, 0);
console.log(`simulated ${users.length} users, ${total} events over the last hour; ${warmup} warm-up + ${steps} measured steps of ${perStep} events (one per user)`);
const results: ModeResult[] = [];
for (const mode of modes) {
  const r = await run(mode, users, now);
  results.push(r);
  console.log(
    `features ${r.features.padEnd(3)}: redis ${r.redisUsPerEvent.toFixed(1)} µs/event (script ${r.scriptUsPerEvent.toFixed(1)}), ` +
      `step wall mean ${r.stepWallMs.mean.toFixed(1)} ms / p50 ${r.stepWallMs.p50.toFixed(1)} / max ${r.stepWallMs.max.toFixed(1)}, fold ${r.foldMsMean.toFixed(1)} ms`,
  );
}
if (args.json) fs.writeFileSync(args.json, JSON.stringify({ at: new Date(now).toISOString(), users: users.length, perStep, warmup, results }, null, 2) + '\n');
