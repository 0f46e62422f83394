/**
 * How far Redis' HyperLogLog estimate (PFCOUNT) falls from the true count, by
 * cardinality, on realistic ids — what the speed layer's error bounds must cover.
 *
 *   npx tsx bench/hll-error.ts [--trials 300] [--json bench-results/hll-error.json]
 *
 * For each cardinality n it adds n distinct ids to a fresh key, reads PFCOUNT,
 * and repeats with other ids: the simulator's `user_<seed>_<i>` ids (what the
 * tests and the demo use) and random UUIDs (what real SDKs send). It reports the
 * 95th and 99th percentiles of the relative error |estimate − n| / n, the
 * fraction of trials inside the textbook 95 % interval (±1.96 × 0.81 %), and the
 * relative half-width that covers 95 % of trials — the table `hllCi95` in
 * common/speed-keys.ts is taken from this run.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { redisClient } from '../common/clients';
import { config } from '../common/config';

const opts = new Command('bench-hll-error')
  .description('Measure the error of Redis HyperLogLog estimates by cardinality (needs the stack: npm run infra:up)')
  .option('--trials <n>', 'trials per cardinality up to 1,000 (fewer above: the cost grows with n)', '300')
  .option('--cardinalities <list>', 'comma-separated cardinalities', '1,2,5,10,20,50,100,150,200,300,500,1000,2000,5000,10000,100000,1000000')
  .option('--json <file>', 'also write the results as JSON')
  .parse()
  .opts<{ trials: string; cardinalities: string; json?: string }>();

const TEXTBOOK = 1.96 * 0.0081;
const redis = redisClient(config());
const key = `${config().redis.keyPrefix}bench:hll:${randomUUID()}`;

function trialsFor(n: number, base: number): number {
  if (n <= 1000) return base;
  if (n <= 10_000) return Math.max(20, Math.floor(base / 3));
  if (n <= 100_000) return Math.max(10, Math.floor(base / 15));
  return Math.max(4, Math.floor(base / 60));
}

async function estimate(ids: string[]): Promise<number> {
  await redis.del(key);
  for (let i = 0; i < ids.length; i += 5000) await redis.pfadd(key, ...ids.slice(i, i + 5000));
  const n = await redis.pfcount(key);
  await redis.del(key);
  return n;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};

interface Row {
  n: number;
  trials: number;
  meanRel: number;
  p95Rel: number;
  p99Rel: number;
  maxAbs: number;
  insideTextbook: number;
}

const rows: Row[] = [];
const cardinalities = opts.cardinalities.split(',').map(Number);
process.stdout.write('| n | trials | mean error | p95 abs. rel. error | p99 | max abs. error | inside ±1.96×0.81 % |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n');
for (const n of cardinalities) {
  const trials = trialsFor(n, Number(opts.trials));
  const rel: number[] = [];
  const signed: number[] = [];
  let maxAbs = 0;
  let inside = 0;
  for (let t = 0; t < trials; t++) {
    // Half the trials on simulator-style ids (a fresh seed each), half on UUIDs.
    const ids = t % 2 === 0 ? Array.from({ length: n }, (_, i) => `user_${1000 + t}_${i}`) : Array.from({ length: n }, () => randomUUID());
    const est = await estimate(ids);
    const err = est - n;
    signed.push(err / n);
    rel.push(Math.abs(err) / n);
    maxAbs = Math.max(maxAbs, Math.abs(err));
    if (Math.abs(err) <= TEXTBOOK * n) inside++;
  }
  const row: Row = {
    n,
    trials,
    meanRel: signed.reduce((a, b) => a + b, 0) / trials,
    p95Rel: quantile(rel, 0.95),
    p99Rel: quantile(rel, 0.99),
    maxAbs,
    insideTextbook: inside / trials,
  };
  rows.push(row);
  const pct = (x: number) => `${(x * 100).toFixed(2)} %`;
  process.stdout.write(`| ${n.toLocaleString('en-US')} | ${trials} | ${pct(row.meanRel)} | ${pct(row.p95Rel)} | ${pct(row.p99Rel)} | ${maxAbs} | ${pct(row.insideTextbook)} |\n`);
}
if (opts.json) {
  fs.mkdirSync(path.dirname(opts.json), { recursive: true });
  fs.writeFileSync(opts.json, JSON.stringify({ at: new Date().toISOString(), redis: (await redis.info('server')).match(/redis_version:(\S+)/)?.[1], rows }, null, 2));
}
redis.disconnect();
