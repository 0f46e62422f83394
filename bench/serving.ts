/**
 * Serving-layer benchmark (issue 6 §1, issue 14 §4): the dashboard's queries, or one user's features, at
 * rising request rates; reports p50 / p90 / p99 / max / errors per step, beside the serving process' own
 * request-duration histogram. Targets: p99 < 25 ms (dashboard) and < 10 ms (features) at 1,000 req/s.
 *
 *   npx tsx bench/serving.ts                          # in-process server on the configured lake/Redis
 *   npx tsx bench/serving.ts --url http://127.0.0.1:8090 --rates 250,500,1000 --seconds 10
 *
 * Runs the server in this process unless --url is given (then it needs a read key that is not rate limited
 * below the load: SERVING_RATE_LIMIT_PER_MIN on that server).
 *
 *   npx tsx bench/serving.ts --scenario features --users 1000 --rates 1000 --seconds 10
 *
 * The features scenario (GET /v1/users/{user_id}/features): the speed layer's real step (RedisApplier)
 * first writes --users users' state, 60 events each over the last 24 h, under a Redis prefix of its own
 * (removed at the end), and reports the bytes per user (MEMORY USAGE); then the requests rotate over those
 * users, sent to a serving process of its own (`serving-layer/main.ts` on a free port and that prefix).
 *
 * The load comes from vegeta (bench/vegeta.ts: open loop, each request at its scheduled instant, in a
 * process of its own); `--loadgen autocannon` keeps the earlier closed-loop figures comparable, but its
 * rate limit sends each second's quota in a burst and its coordinated-omission correction assumes one
 * request per millisecond, so its tail is not the server's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { redisClient } from '../common/clients';
import { loadConfig, REPO_ROOT, type Config } from '../common/config';
import { BUCKET_MS, bucketStart, EVENT_TYPES, validateEvent } from '../common/contract';
import { speedKeys } from '../common/speed-keys';
import { startServing, type Serving } from '../serving-layer/service';
import { RedisApplier } from '../speed-layer/apply';
import { eventIdHash, foldEvents, type FoldInput } from '../speed-layer/fold';
import { attack, ensureVegeta } from './vegeta';

process.env.LOG_LEVEL ??= 'warn';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    rates: { type: 'string', default: '250,500,1000' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '20' },
    key: { type: 'string', default: 'dev-read-key' },
    scenario: { type: 'string', default: 'dashboard' },
    users: { type: 'string', default: '1000' },
    'cpu-prof': { type: 'string' },
    loadgen: { type: 'string', default: 'vegeta' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  process.stdout.write(`Usage: npx tsx bench/serving.ts [options]

The serving layer at rising request rates: p50 / p90 / p99 / max / errors per step (vegeta by default),
beside the serving process' own request-duration histogram.

Options:
  --scenario <name>    dashboard (the dashboard's queries; target p99 < 25 ms at 1,000 req/s) or
                       features (GET /v1/users/{id}/features; target p99 < 10 ms at 1,000 req/s) (dashboard)
  --rates <list>       request rates per step, comma-separated (250,500,1000)
  --seconds <n>        seconds per step (5)
  --loadgen <name>     vegeta (open loop, each request at its scheduled instant; built once with Go under
                       STACK_HOME/tools) or autocannon (closed loop: bursts each second's quota) (vegeta)
  --connections <n>    autocannon connections (20)
  --url <url>          a running serving layer instead of one in this process (dashboard only)
  --key <key>          read key (dev-read-key)
  --users <n>          users whose state the features scenario writes first (1000)
  --cpu-prof <dir>     write the serving process' CPU profile into <dir> (features scenario)
  -h, --help           this text
`);
  process.exit(0);
}
if (!['vegeta', 'autocannon'].includes(args.loadgen!)) throw new Error(`--loadgen is vegeta or autocannon, not ${args.loadgen}`);
if (!['dashboard', 'features'].includes(args.scenario!)) throw new Error(`--scenario is dashboard or features, not ${args.scenario}`);
const features = args.scenario === 'features';
if (features && args.url) throw new Error('--scenario features runs its own server over the users it writes: no --url');

/** What the dashboard asks every 2 s (live) and every 30 s (hourly/daily), in one rotation. */
function dashboardPaths(now: number): string[] {
  const sec = bucketStart(now, 'second');
  const hour = bucketStart(now, 'hour') + BUCKET_MS.hour;
  const day = bucketStart(now, 'day') + BUCKET_MS.day;
  return [
    `/v1/metrics/events?granularity=second&from=${sec - 120_000}&to=${sec}&group_by=event_type`,
    '/v1/freshness',
    '/v1/alerts',
    `/v1/metrics/events?granularity=hour&from=${hour - 48 * BUCKET_MS.hour}&to=${hour}`,
    `/v1/metrics/active_users?granularity=hour&from=${hour - 48 * BUCKET_MS.hour}&to=${hour}`,
    `/v1/metrics/playback?granularity=hour&from=${hour - 24 * BUCKET_MS.hour}&to=${hour}`,
    `/v1/metrics/daily_sessions?granularity=day&from=${day - 14 * BUCKET_MS.day}&to=${day}`,
    `/v1/metrics/obt?granularity=day&from=${day - 14 * BUCKET_MS.day}&to=${day}&group_by=device_type`,
  ];
}

/** Write `n` users' feature state through the speed layer's own step: 60 events each over the last 24 h, 10 in the last hour. */
async function seedUsers(cfg: Config, n: number): Promise<string[]> {
  const redis = redisClient(cfg);
  const applier = new RedisApplier(redis, cfg);
  const now = Date.now();
  const users = Array.from({ length: n }, (_, i) => `bench_user_${i}`);
  let offset = 0;
  for (let b = 0; b < n; b += 100) {
    const inputs: FoldInput[] = [];
    for (const user of users.slice(b, b + 100)) {
      for (let e = 0; e < 60; e++) {
        const ts = e < 50 ? now - 24 * BUCKET_MS.hour + e * 27 * 60_000 : now - (60 - e) * 5 * 60_000;
        const id = `${user}-${e}`;
        const v = validateEvent({ event_id: id, event_type: EVENT_TYPES[e % EVENT_TYPES.length], user_id: user, timestamp: ts, properties: { device_type: 'smart_tv', content_id: `movie_${e % 7}` } }, now);
        if (!v.ok) throw new Error(v.detail);
        inputs.push({ record: v.record, hash: eventIdHash(id) });
      }
    }
    const fold = foldEvents(inputs, { now, secondRetentionMs: cfg.speed.secondRetentionMs, retentionMs: cfg.speed.retentionMs });
    const res = await applier.apply({ topic: 'bench', partition: 0, firstOffset: offset, nextOffset: offset + inputs.length, now, fold, binges: [], unparseable: 0, crossBatchDuplicates: 0, freshnessMs: null });
    if (res.status !== 'applied') throw new Error(`seeding step ${JSON.stringify(res)}`);
    offset += inputs.length;
  }
  const keys = speedKeys(cfg);
  const sample = users.slice(0, 100);
  const bytes = await Promise.all(sample.map((u) => redis.memory('USAGE', keys.userFeatures(u))));
  const fields = await Promise.all(sample.map((u) => redis.hlen(keys.userFeatures(u))));
  const avg = (xs: Array<number | null>) => Math.round(xs.reduce<number>((a, x) => a + Number(x ?? 0), 0) / xs.length);
  console.log(`seeded ${n} users (60 events each over 24 h): ${avg(bytes)} bytes per user (MEMORY USAGE, mean of ${sample.length}), ${avg(fields)} hash fields`);
  redis.disconnect();
  return users;
}

async function dropPrefix(cfg: Config): Promise<void> {
  const redis = redisClient(cfg);
  for await (const batch of redis.scanStream({ match: speedKeys(cfg).glob(), count: 1000 })) if ((batch as string[]).length > 0) await redis.del(...(batch as string[]));
  redis.disconnect();
}

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** The serving layer as a process of its own, on `env`; resolves once /health answers. */
async function spawnServing(env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const prof = args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(args['cpu-prof'])}`] : [];
  const child = spawn(process.execPath, [...prof, '--import', 'tsx', path.join(REPO_ROOT, 'serving-layer/main.ts')], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env, SERVING_PORT: String(port), SERVING_HOST: '127.0.0.1' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (await fetch(`${url}/health`).then(() => true, () => false)) return { child, url };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('the serving process did not start within 30 s');
}

let serving: Serving | undefined;
let child: ChildProcess | undefined;
let base = args.url;
let benchCfg: Config | undefined;
let paths: string[];
if (features) {
  const env = { REDIS_KEY_PREFIX: `bench:features:${process.pid}:`, SERVING_RATE_LIMIT_PER_MIN: String(10_000_000) };
  benchCfg = loadConfig({ ...process.env, ...env });
  const users = await seedUsers(benchCfg, Number(args.users));
  paths = users.map((u) => `/v1/users/${u}/features`);
  ({ child, url: base } = await spawnServing(env));
} else {
  if (!base) {
    serving = await startServing(loadConfig({ ...process.env, SERVING_RATE_LIMIT_PER_MIN: String(10_000_000) }), { port: 0, host: '127.0.0.1' });
    base = serving.url;
  }
  paths = dashboardPaths(Date.now());
}

console.log(`serving benchmark against ${base}: ${paths.length} ${features ? 'users' : 'dashboard queries'} in rotation, ${args.seconds} s per step`);
/**
 * The serving process' own view of a step: its request-duration histogram (onRequest to response sent, for
 * every route but /metrics) before and after, as the share of requests within 10 ms and the bucket holding
 * the 99th percentile. Set beside autocannon's figures, it tells the server's time from the time a request
 * waited for a core, a socket or the load generator's own event loop.
 */
async function serverHistogram(): Promise<Map<number, number>> {
  const text = await fetch(`${base}/metrics`).then((r) => r.text());
  const out = new Map<number, number>();
  for (const m of text.matchAll(/^serving_http_request_duration_seconds_bucket\{([^}]*)\} (\d+)/gm)) {
    if (m[1].includes('route="/metrics"')) continue;
    const le = /le="([^"]+)"/.exec(m[1])![1];
    const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
    out.set(bound, (out.get(bound) ?? 0) + Number(m[2]));
  }
  return out;
}
function serverSummary(before: Map<number, number>, after: Map<number, number>): string {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const cum = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = cum.at(-1) ?? 0;
  if (total === 0) return 'no requests';
  const within10 = cum[bounds.indexOf(0.01)] / total;
  const p99 = bounds[cum.findIndex((c) => c >= 0.99 * total)];
  return `${(100 * within10).toFixed(2)} % within 10 ms, p99 ≤ ${Number.isFinite(p99) ? `${p99 * 1000} ms` : '∞'} (${total} requests)`;
}

const vegeta = args.loadgen === 'vegeta' ? await ensureVegeta() : null;
console.log(`load generator: ${args.loadgen}${vegeta ? ' (open loop: each request at its scheduled instant)' : ` (${args.connections} connections, closed loop)`}`);
console.log('rate req/s | achieved | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors | server side (its own histogram)');
for (const rate of args.rates!.split(',').map(Number)) {
  const before = await serverHistogram();
  let row: Array<string | number>;
  if (vegeta) {
    const r = await attack({ bin: vegeta, base: base!, paths, headers: { 'x-api-key': args.key! }, rate, seconds: Number(args.seconds) });
    const ok = Object.entries(r.statusCodes).filter(([code]) => code.startsWith('2')).reduce((n, [, c]) => n + c, 0);
    row = [rate, Math.round(r.throughput), r.p50, r.p90, r.p99, r.max, r.requests - ok - (r.statusCodes['0'] ?? 0), r.statusCodes['0'] ?? 0];
  } else {
    const result = await autocannon({
      url: base,
      connections: Number(args.connections),
      overallRate: rate,
      duration: Number(args.seconds),
      headers: { 'x-api-key': args.key! },
      requests: paths.map((p) => ({ method: 'GET', path: p })),
    });
    const l = result.latency;
    row = [rate, Math.round(result.requests.average), l.p50, l.p90, l.p99, l.max, result.non2xx, result.errors];
  }
  const server = serverSummary(before, await serverHistogram());
  console.log([...row.map((v) => String(v).padStart(6)), server].join(' | '));
}
await serving?.stop();
if (child) {
  const exited = new Promise((r) => child!.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}
if (features) await dropPrefix(benchCfg!);
