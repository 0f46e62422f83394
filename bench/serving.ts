/**
 * Serving-layer benchmark (issue 6 §1): the dashboard's queries with autocannon
 * at rising request rates; reports p50 / p99 / errors per step. Target: p99 <
 * 25 ms at 1,000 req/s.
 *
 *   npx tsx bench/serving.ts                          # in-process server on the configured lake/Redis
 *   npx tsx bench/serving.ts --url http://127.0.0.1:8090 --rates 250,500,1000 --seconds 10
 *
 * Runs the server in this process unless --url is given (then it needs a read key that is not rate limited
 * below the load: SERVING_RATE_LIMIT_PER_MIN on that server).
 */
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { loadConfig } from '../common/config';
import { BUCKET_MS, bucketStart } from '../common/contract';
import { startServing, type Serving } from '../serving-layer/service';

process.env.LOG_LEVEL ??= 'warn';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    rates: { type: 'string', default: '250,500,1000' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '20' },
    key: { type: 'string', default: 'dev-read-key' },
  },
});

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

let serving: Serving | undefined;
let base = args.url;
if (!base) {
  const cfg = loadConfig({ ...process.env, SERVING_RATE_LIMIT_PER_MIN: String(10_000_000) });
  serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  base = serving.url;
}

const paths = dashboardPaths(Date.now());
console.log(`serving benchmark against ${base}: ${paths.length} dashboard queries in rotation, ${args.seconds} s per step`);
console.log('rate req/s | achieved | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors');
for (const rate of args.rates!.split(',').map(Number)) {
  const result = await autocannon({
    url: base,
    connections: Number(args.connections),
    overallRate: rate,
    duration: Number(args.seconds),
    headers: { 'x-api-key': args.key! },
    requests: paths.map((p) => ({ method: 'GET', path: p })),
  });
  const l = result.latency;
  console.log(
    [rate, Math.round(result.requests.average), l.p50, l.p90, l.p99, l.max, result.non2xx, result.errors].map((v) => String(v).padStart(6)).join(' | '),
  );
}
await serving?.stop();
