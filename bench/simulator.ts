/**
 * How fast the simulator generates sends, in-process (no HTTP): the ceiling it
 * puts on any end-to-end benchmark that uses it.
 *   npx tsx bench/simulator.ts [--users 1000] [--days 3] [--rounds 5]
 */
import { Command } from 'commander';
import { simulate } from '../ingestion/simulator/generate';

const opts = new Command('bench-simulator')
  .option('--users <n>', 'users', '1000')
  .option('--days <n>', 'simulated days', '3')
  .option('--rounds <n>', 'repetitions (best is reported)', '5')
  .parse()
  .opts<{ users: string; days: string; rounds: string }>();

const start = Date.UTC(2026, 10, 1);
const sim = { seed: 9, users: Number(opts.users), startMs: start, endMs: start + Number(opts.days) * 86_400_000, lateFraction: 0.02, duplicateFraction: 0.02, invalidFraction: 0.01 };
let best = 0;
let sends = 0;
for (let round = 0; round < Number(opts.rounds); round++) {
  const t0 = performance.now();
  let n = 0;
  for (const _ of simulate(sim)) n++;
  const rate = n / ((performance.now() - t0) / 1000);
  best = Math.max(best, rate);
  sends = n;
  process.stdout.write(`round ${round + 1}: ${n} sends, ${Math.round(rate).toLocaleString('en-US')} sends/s\n`);
}
process.stdout.write(`best: ${Math.round(best).toLocaleString('en-US')} sends/s over ${sends} sends (${opts.users} users, ${opts.days} days)\n`);
