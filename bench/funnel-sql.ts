/**
 * The daily funnel SQL (user_funnels, METRICS.md "Funnels") beside the sessions it sits next to:
 * one shard's day of simulated events, in bare DuckDB (no lake, no stack).
 *
 *   npx tsx bench/funnel-sql.ts [--users 20000] [--funnels 2] [--repeat 2]
 *
 * The simulator writes one day of traffic (seed 7); its valid events are the shard's day_events.
 * `--funnels` declares browse_to_play and, from 2, home_to_play (a page filter, 30 min).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { parseFunnelSteps } from '../common/config';
import { validateEvent } from '../common/contract';
import { Duck, sqlFile, sqlString } from '../batch-layer/jobs/duck';
import { writeNdjson } from '../ingestion/simulator/generate';

const opts = new Command('bench-funnel-sql')
  .description('Time user_funnels.sql beside sessions.sql over a simulated day (bare DuckDB)')
  .option('--users <n>', 'simulated users', '20000')
  .option('--funnels <n>', 'declared funnels (1 or 2)', '2')
  .option('--repeat <n>', 'rounds, each statement once per round', '2')
  .parse()
  .opts<{ users: string; funnels: string; repeat: string }>();

const START = Date.parse('2025-03-03T00:00:00Z');
const DAY = 86_400_000;
const FUNNELS = [
  { name: 'browse_to_play', steps: ['page_view', 'click', 'video_play', 'video_complete'], window_ms: 3_600_000 },
  { name: 'home_to_play', steps: ['page_view:page=home', 'click', 'video_play'], window_ms: 1_800_000 },
].slice(0, Number(opts.funnels));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-funnel-'));
const ndjson = path.join(dir, 'sends.ndjson');
await writeNdjson(ndjson, { seed: 7, users: Number(opts.users), startMs: START, endMs: START + DAY });
const rows = fs
  .readFileSync(ndjson, 'utf8')
  .split('\n')
  .filter((l) => l !== '')
  .map((l) => validateEvent(JSON.parse(l), START + 2 * DAY, { latenessHorizonMs: Number.POSITIVE_INFINITY }))
  .flatMap((v) => (v.ok ? [v.record] : []));
const file = path.join(dir, 'events.ndjson');
fs.writeFileSync(file, rows.map((r) => JSON.stringify({ event_id: r.event_id, event_type: r.event_type, user_id: r.user_id, ts: r.ts, device_type: r.device_type, app_version: r.app_version, country: r.country, content_id: r.content_id, page: (r.properties as { page?: string } | null)?.page ?? null })).join('\n'));

const duck = await Duck.open({ threads: 2 });
await duck.setVariables({ day: { date: '2025-03-03' }, day_start: START, day_end: START + DAY });
await duck.run(`CREATE TABLE day_events AS SELECT DISTINCT ON (event_id) * FROM read_json(${sqlString(file)}, columns = {event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', ts: 'BIGINT', device_type: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR', content_id: 'VARCHAR', page: 'VARCHAR'}) WHERE ts >= ${START} AND ts < ${START + DAY}`);
await duck.run('CREATE TABLE funnel_steps (funnel VARCHAR, step INTEGER, event_type VARCHAR, property VARCHAR, value VARCHAR, window_ms BIGINT)');
for (const f of FUNNELS) {
  for (const [i, s] of parseFunnelSteps(f.steps).entries()) await duck.con.run('INSERT INTO funnel_steps VALUES ($1, $2, $3, $4, $5, $6)', [f.name, i + 1, s.event_type, s.property, s.value, f.window_ms]);
}
const ms: Record<string, number[]> = {};
for (let round = 0; round < Number(opts.repeat); round++) {
  for (const name of ['sessions', 'user_funnels']) {
    const t0 = performance.now();
    await duck.run(`CREATE OR REPLACE TABLE ${name} AS ${sqlFile(name)}`);
    (ms[name] ??= []).push(Math.round(performance.now() - t0));
  }
}
const report = { users: Number(opts.users), funnels: FUNNELS.length, events: await duck.scalar('SELECT count(*) FROM day_events'), userFunnelRows: await duck.scalar('SELECT count(*) FROM user_funnels'), ms };
process.stdout.write(`${JSON.stringify(report)}\n`);
duck.close();
fs.rmSync(dir, { recursive: true, force: true });
