/**
 * Funnels end to end on the real stack: three simulated days go into the raw lake as the lake
 * writer would write them, the real hourly and daily jobs publish them, and the published
 * user_funnels rows, the declared funnels' API answers and ad-hoc funnels over processed/events
 * must equal an independent computation in plain SQL over the NDJSON (METRICS.md "Funnels"
 * written again with correlated subqueries, not batch-layer/sql), value for value.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import { parseFunnelSteps, type Config, type FunnelStep } from '../../common/config';
import { EVENT_TYPES } from '../../common/contract';
import { logger } from '../../common/log';
import { jobContext, runDaily } from '../../batch-layer/jobs';
import { startServing, type Serving } from '../../serving-layer/service';
import { lakePaths, type RunManifest } from '../../common/lake';
import { getJson, putJson, stageObjects } from '../../common/lake-io';
import { sqlList, sqlString, type Duck } from '../../batch-layer/jobs/duck';
import { dayWindow, publishSimulatedDays, type PublishedDays } from './analytics-support';

const DAY = 86_400_000;
const START = Date.parse('2025-03-03T00:00:00Z');
const N_DAYS = 3;
const WINDOW = dayWindow(START, N_DAYS);
const { end: END, days: DAYS, clock: CLOCK } = WINDOW;
const BROWSE = ['page_view', 'click', 'video_play', 'video_complete'];
const HOME = ['page_view:page=home', 'click', 'video_play'];
const FUNNELS = [
  { name: 'browse_to_play', steps: BROWSE, window_ms: 3_600_000 },
  { name: 'home_to_play', steps: HOME, window_ms: 1_800_000 },
];

let lake: PublishedDays;
let cfg: Config;
let tmp: string;
let duck: Duck;

const get = (pathAndQuery: string) => lake.get(pathAndQuery);

beforeAll(async () => {
  lake = await publishSimulatedDays('funnels', WINDOW, { seed: 6, users: 60, overrides: { FUNNELS: JSON.stringify(FUNNELS) } });
  ({ cfg, tmp, duck } = lake);
  // exp_events has no page: the valid line an event came from has it (every copy of an event carries the same one).
  await duck.run(`
    CREATE TABLE exp_funnel_events AS
    SELECT e.*, (SELECT min(json_extract_string(l.line, '$.properties.page')) FROM lines l
                 WHERE json_valid(l.line) AND json_extract_string(l.line, '$.event_id') = e.event_id
                   AND json_type(l.line, '$.properties.page') = 'VARCHAR' AND json_extract_string(l.line, '$.timestamp') = CAST(e.ts AS VARCHAR)) AS page
    FROM exp_events e`);
}, 1_800_000);

afterAll(() => lake?.stop());

/**
 * Each user's best attempt per day, from the definition: an attempt per step-1 event; step k is the
 * user's first event (by ts, then event_id) matching it after step k-1, the same day, within the window;
 * the best reaches the most steps, the earliest-started among equals.
 */
function expectedUsers(steps: FunnelStep[], windowMs: number): string {
  const match = (s: FunnelStep, e: string) =>
    `${e}.event_type = ${sqlString(s.event_type)}${s.property ? ` AND ${e}.${s.property} = ${sqlString(s.value!)}` : ''}`;
  const after = (e: string, k: number) => `(${e}.ts > a.t${k} OR (${e}.ts = a.t${k} AND ${e}.event_id > a.id${k}))`;
  let sql = `SELECT user_id, day, ts AS t1, event_id AS id1, device_type, country FROM exp_funnel_events e WHERE ${match(steps[0], 'e')}`;
  for (let k = 2; k <= steps.length; k++) {
    const cand = `FROM exp_funnel_events e WHERE e.user_id = a.user_id AND e.day = a.day AND ${match(steps[k - 1], 'e')} AND ${after('e', k - 1)} AND e.ts <= a.t1 + ${windowMs}`;
    sql = `SELECT a.*, n.ts AS t${k}, n.event_id AS id${k} FROM (${sql}) a
      LEFT JOIN LATERAL (SELECT e.ts, e.event_id ${cand} ORDER BY e.ts, e.event_id LIMIT 1) n ON true`;
  }
  const reached = Array.from({ length: steps.length - 1 }, (_, i) => `(t${i + 2} IS NOT NULL)::INT`).join(' + ');
  const ts = Array.from({ length: steps.length }, (_, i) => `t${i + 1}`);
  return `SELECT CAST(day AS VARCHAR) AS day, user_id, device_type, country, 1 + ${reached} AS steps_reached,
      list_filter([${ts.join(', ')}], x -> x IS NOT NULL) AS step_ts
    FROM (${sql})
    QUALIFY row_number() OVER (PARTITION BY user_id, day ORDER BY steps_reached DESC, t1, id1) = 1
    ORDER BY day, user_id`;
}

/** Per day (and group): entrants, users per step, medians between steps, as the API's values. */
async function expectedBuckets(steps: FunnelStep[], windowMs: number, groupBy: string[] = [], where = 'true'): Promise<Map<string, any>> {
  const n = steps.length;
  const cols = Array.from({ length: n }, (_, i) =>
    i === 0 ? 'count(*) AS u1' : `count(*) FILTER (WHERE steps_reached > ${i}) AS u${i + 1}, median(step_ts[${i + 1}] - step_ts[${i}]) FILTER (WHERE steps_reached > ${i}) AS m${i + 1}`,
  );
  const rows = await duck.rows(`SELECT day${groupBy.map((g) => `, ${g}`).join('')}, ${cols.join(', ')} FROM (${expectedUsers(steps, windowMs)}) WHERE ${where} GROUP BY ALL`);
  const out = new Map<string, any>();
  for (const r of rows) {
    const users = Array.from({ length: n }, (_, i) => Number(r[`u${i + 1}`]));
    const value = {
      entered: users[0],
      steps: users.map((u, i) => ({
        users: u,
        conversion: i === 0 || users[i - 1] === 0 ? null : u / users[i - 1],
        median_ms: i === 0 || r[`m${i + 1}`] === null ? null : Number(r[`m${i + 1}`]),
      })),
      conversion: users[0] === 0 ? null : users[n - 1] / users[0],
    };
    out.set(JSON.stringify([r.day, ...groupBy.map((g) => r[g])]), value);
  }
  return out;
}

/** The API's buckets as the same map, days without entrants left out (the expected SQL has no row for them). */
function actualBuckets(body: any, groupBy: string[] = []): Map<string, any> {
  const out = new Map<string, any>();
  for (const s of body.series) {
    for (const b of s.buckets) {
      expect(b.source).toBe('batch');
      if (b.value.entered > 0) out.set(JSON.stringify([new Date(b.start).toISOString().slice(0, 10), ...groupBy.map((g) => s.key[g])]), b.value);
    }
  }
  return out;
}

const stepsOf = (steps: string[]) => parseFunnelSteps(steps);
const range = `granularity=day&from=${START}&to=${END}`;

describe('declared funnels (precomputed user_funnels)', () => {
  it('publishes, per day, exactly the SQL over the NDJSON: every user, step and step time', async () => {
    const s3 = s3Client(cfg);
    for (const [i, day] of DAYS.entries()) {
      const manifest = await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('daily', day));
      expect(manifest!.outputs.user_funnels, day).toBeDefined();
      const [file] = await stageObjects(s3, cfg.s3.bucket, [manifest!.outputs.user_funnels], path.join(tmp, `uf-${i}`));
      for (const f of FUNNELS) {
        const got = await duck.json(`SELECT CAST(day AS VARCHAR) AS day, user_id, device_type, country, steps_reached, step_ts FROM read_parquet(${sqlList([file])}) WHERE funnel = ${sqlString(f.name)} ORDER BY day, user_id`);
        const want = await duck.json(`SELECT * FROM (${expectedUsers(stepsOf(f.steps), f.window_ms)}) WHERE day = ${sqlString(day)}`);
        expect(got, `${f.name} ${day}`).toEqual(want);
        expect(want.length, `${f.name} ${day}`).toBeGreaterThan(0);
      }
    }
  });

  it('answers the API per day, per step, per device/country split and under a filter, equal to the SQL', async () => {
    for (const f of FUNNELS) {
      const qs = `${range}&steps=${encodeURIComponent(f.steps.join(','))}&window=${f.window_ms}`;
      const all = await get(`/v1/metrics/funnel?${qs}`);
      expect(all.status).toBe(200);
      expect(all.body.funnel.name).toBe(f.name);
      expect(all.body.coverage).toEqual({ batch: N_DAYS, speed: 0, none: 0 });
      expect(actualBuckets(all.body)).toEqual(await expectedBuckets(stepsOf(f.steps), f.window_ms));

      const split = await get(`/v1/metrics/funnel?${qs}&group_by=device_type,country`);
      expect(split.status).toBe(200);
      expect(actualBuckets(split.body, ['device_type', 'country'])).toEqual(await expectedBuckets(stepsOf(f.steps), f.window_ms, ['device_type', 'country']));

      const tv = await get(`/v1/metrics/funnel?${qs}&device_type=tv&country=US`);
      expect(actualBuckets(tv.body)).toEqual(await expectedBuckets(stepsOf(f.steps), f.window_ms, [], `device_type = 'tv' AND country = 'US'`));
    }
  });

  it('has drop-offs at every step of browse to play in the simulated traffic', async () => {
    const r = await get(`/v1/metrics/funnel?${range}&steps=${BROWSE.join(',')}`);
    expect(r.body.funnel.name).toBe('browse_to_play');
    const totals = BROWSE.map((_, i) => r.body.series[0].buckets.reduce((n: number, b: any) => n + b.value.steps[i].users, 0));
    for (let i = 1; i < totals.length; i++) {
      expect(totals[i], `step ${i + 1} of ${totals}`).toBeGreaterThan(0);
      expect(totals[i], `step ${i + 1} of ${totals}`).toBeLessThan(totals[i - 1]);
    }
  });

  it('labels the days after the batch watermark none, with the reason', async () => {
    const r = await get(`/v1/metrics/funnel?granularity=day&from=${START}&to=${END + 2 * DAY}&steps=${BROWSE.join(',')}`);
    expect(r.status).toBe(200);
    expect(r.body.coverage).toEqual({ batch: N_DAYS, speed: 0, none: 2 });
    expect(r.body.series[0].buckets.slice(-2).map((b: any) => b.value)).toEqual([null, null]);
    expect(r.body.speed).toEqual({ source: 'none', reason: expect.stringContaining('in order') });
  });
});

describe('GET /v1/metrics/funnels', () => {
  it('lists the declared funnels as FUNNELS spells them, and the ad-hoc limits, with the read key only', async () => {
    const r = await get('/v1/metrics/funnels');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ funnels: FUNNELS, event_types: [...EVENT_TYPES], max_steps: 8, max_window_ms: DAY, adhoc_max_days: 31 });
    expect((await fetch(`${lake.serving.url}/v1/metrics/funnels`)).status).toBe(401);
    expect((await fetch(`${lake.serving.url}/v1/metrics/funnels`, { headers: { 'x-api-key': 'not-a-key' } })).status).toBe(401);
    const doc = (await get('/openapi.json')).body;
    expect(doc.paths['/v1/metrics/funnels'].get).toBeDefined();
  });
});

describe('a funnel declared after its days were published', () => {
  // Declared in a new FUNNELS the published days were not computed with; `empty` matches nobody.
  const LATE = { name: 'late_funnel', steps: ['page_view', 'video_play'], window_ms: 600_000 };
  const EMPTY = { name: 'empty_funnel', steps: ['page_view:page=nowhere', 'click'], window_ms: 600_000 };
  const declare = (funnels: Array<{ name: string; steps: string[]; window_ms: number }>): Config => ({
    ...cfg,
    funnels: funnels.map((f) => ({ name: f.name, steps: stepsOf(f.steps), window_ms: f.window_ms })),
  });
  const servings: Serving[] = [];
  const serve = async (c: Config) => {
    const s = await startServing(c, { port: 0, host: '127.0.0.1' });
    servings.push(s);
    return async (q: string) => {
      const res = await fetch(`${s.url}${q}`, { headers: { 'x-api-key': 'dev-read-key' } });
      return { status: res.status, body: (await res.json()) as any };
    };
  };
  const funnelQs = (f: { steps: string[]; window_ms: number }) => `/v1/metrics/funnel?${range}&steps=${encodeURIComponent(f.steps.join(','))}&window=${f.window_ms}`;
  afterAll(async () => {
    for (const s of servings) await s.stop();
  });

  it('answers its published days as not computed (none, with the days and the reason), never an exact 0; a backfill makes them exact', async () => {
    const lateCfg = declare([...FUNNELS, LATE, EMPTY]);
    const lateGet = await serve(lateCfg);
    for (const f of [LATE, EMPTY]) {
      const r = await lateGet(funnelQs(f));
      expect(r.status).toBe(200);
      expect(r.body.funnel.name).toBe(f.name);
      expect(r.body.coverage).toEqual({ batch: 0, speed: 0, none: N_DAYS });
      expect(r.body.exact).toBe(false);
      for (const b of r.body.series[0].buckets) expect(b).toMatchObject({ source: 'none', exact: false, covered: false, value: null });
      expect(r.body.funnel.not_computed.days).toEqual(DAYS);
      expect(r.body.funnel.not_computed.reason).toContain('backfill');
    }
    // The funnels declared all along are still exact, with nothing missing.
    const browse = await lateGet(funnelQs(FUNNELS[0]));
    expect(browse.body.coverage).toEqual({ batch: N_DAYS, speed: 0, none: 0 });
    expect(browse.body.funnel.not_computed).toEqual({ days: [], reason: null });

    // The daily backfill of one day, under the new FUNNELS: that day is exact and equals the SQL; nobody entering is an exact 0.
    await runDaily(jobContext(lateCfg, logger('funnels-late-test')), DAYS[1], { now: CLOCK });
    await servings[0].store.sync();
    const r = await lateGet(funnelQs(LATE));
    expect(r.body.coverage).toEqual({ batch: 1, speed: 0, none: N_DAYS - 1 });
    expect(r.body.series[0].buckets.map((b: any) => b.source)).toEqual(['none', 'batch', 'none']);
    expect(r.body.funnel.not_computed.days).toEqual([DAYS[0], DAYS[2]]);
    const want = await expectedBuckets(stepsOf(LATE.steps), LATE.window_ms);
    const day1 = r.body.series[0].buckets[1];
    expect(day1.exact).toBe(true);
    expect(day1.value).toEqual(want.get(JSON.stringify([DAYS[1]])));
    expect(day1.value.entered).toBeGreaterThan(0);
    const empty = await lateGet(funnelQs(EMPTY));
    expect(empty.body.series[0].buckets[1]).toMatchObject({ source: 'batch', exact: true, value: { entered: 0 } });
    expect(empty.body.funnel.not_computed.days).toEqual([DAYS[0], DAYS[2]]);
    // The re-published day still holds the funnels declared before, with the same definitions.
    await lake.serving.store.sync();
    const before = await get(funnelQs(FUNNELS[0]));
    expect(before.body.coverage).toEqual({ batch: N_DAYS, speed: 0, none: 0 });
    expect(actualBuckets(before.body)).toEqual(await expectedBuckets(stepsOf(BROWSE), 3_600_000));
  });

  it('does not serve days computed with an older definition of the same name as the new one', async () => {
    const changed = { name: 'browse_to_play', steps: BROWSE, window_ms: 1_800_000 };
    const changedGet = await serve(declare([changed, FUNNELS[1]]));
    const r = await changedGet(funnelQs(changed));
    expect(r.body.funnel.name).toBe('browse_to_play');
    expect(r.body.coverage).toEqual({ batch: 0, speed: 0, none: N_DAYS });
    expect(r.body.funnel.not_computed.days).toEqual(DAYS);
    // The old definition is no longer declared: an ad-hoc funnel over processed/events, still equal to the SQL.
    const old = await changedGet(funnelQs(FUNNELS[0]));
    expect(old.body.funnel.name).toBeNull();
    expect(actualBuckets(old.body)).toEqual(await expectedBuckets(stepsOf(BROWSE), 3_600_000));
  });
});

describe('ad-hoc funnels (processed/events in the serving layer)', () => {
  const adhoc = [
    { steps: ['page_view', 'click', 'video_play'], window_ms: 600_000 },
    { steps: ['click:page=browse', 'video_play', 'video_pause', 'video_resume', 'video_complete'], window_ms: 86_400_000 },
  ];

  it('equals the SQL per day, per step and per split', async () => {
    for (const f of adhoc) {
      const qs = `${range}&steps=${encodeURIComponent(f.steps.join(','))}&window=${f.window_ms}`;
      const all = await get(`/v1/metrics/funnel?${qs}`);
      expect(all.status, JSON.stringify(all.body)).toBe(200);
      expect(all.body.funnel).toEqual({ name: null, steps: stepsOf(f.steps), window_ms: f.window_ms });
      const want = await expectedBuckets(stepsOf(f.steps), f.window_ms);
      expect(want.size).toBeGreaterThan(0);
      expect(actualBuckets(all.body)).toEqual(want);
      const split = await get(`/v1/metrics/funnel?${qs}&group_by=country&device_type=web`);
      expect(actualBuckets(split.body, ['country'])).toEqual(await expectedBuckets(stepsOf(f.steps), f.window_ms, ['country'], `device_type = 'web'`));
    }
  });

  it('answers 400 with the reason beyond its limits', async () => {
    const cases: Array<[string, string]> = [
      [`granularity=day&from=${START}&to=${START + 32 * DAY}&steps=page_view,click`, '31 days'],
      [`${range}&steps=${Array.from({ length: 9 }, () => 'click').join(',')}`, 'steps'],
      [`${range}&steps=page_view,click&window=${DAY + 1}`, 'window'],
      [`${range}&steps=page_view,purchase`, 'steps'],
      [`${range}&steps=page_view:target=x,click`, 'steps'],
      [`${range}&steps=page_view`, 'steps'],
    ];
    for (const [qs, word] of cases) {
      const r = await get(`/v1/metrics/funnel?${qs}`);
      expect(r.status, qs).toBe(400);
      expect(JSON.stringify(r.body), qs).toContain(word);
    }
    // A declared funnel is precomputed: its range is not limited to 31 days.
    expect((await get(`/v1/metrics/funnel?granularity=day&from=${START}&to=${START + 40 * DAY}&steps=${BROWSE.join(',')}`)).status).toBe(200);
  });

  it('binds values: a quote in a property value is a value, not SQL', async () => {
    const r = await get(`/v1/metrics/funnel?${range}&steps=${encodeURIComponent("page_view:page=x'OR'1,click")}`);
    expect(r.status).toBe(200);
    expect(r.body.funnel.steps[0].value).toBe("x'OR'1");
    expect(r.body.series[0].buckets.every((b: any) => b.value.entered === 0)).toBe(true);
  });

  // Last: it marks a day's processed events as removed.
  it('answers 400 for a day whose processed events retention removed, and keeps the declared funnels', async () => {
    await putJson(s3Client(cfg), cfg.s3.bucket, lakePaths.processedRetention(DAYS[0]), { zone: 'processed', day: DAYS[0], removedAt: new Date(CLOCK).toISOString(), objects: 24, maxAgeDays: 1 });
    const r = await get(`/v1/metrics/funnel?${range}&steps=page_view,click&window=60000`);
    expect(r.status).toBe(400);
    expect(r.body.message).toContain(`processed retention removed the events of ${DAYS[0]}`);
    expect((await get(`/v1/metrics/funnel?${range}&steps=${BROWSE.join(',')}`)).status).toBe(200);
  });

  it('is in /openapi.json', async () => {
    const doc = (await get('/openapi.json')).body;
    const params = doc.paths['/v1/metrics/funnel'].get.parameters.map((x: any) => x.name);
    expect(params).toEqual(expect.arrayContaining(['steps', 'window', 'device_type', 'country', 'group_by', 'from', 'to']));
  });
});
