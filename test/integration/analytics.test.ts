/**
 * Product analytics end to end on the real stack: 22 simulated days (plus a hand-built user who is
 * new, returning, dormant, resurrecting and then at risk of churning) go into the raw lake as the
 * lake writer would write them, the real hourly and daily jobs publish them, and the serving API's
 * lifecycle, retention variants and churn risk must equal an independent computation in plain SQL
 * over the NDJSON (METRICS.md written again, not batch-layer/sql), value for value.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { lakePaths, type RunManifest } from '../../common/lake';
import { getJson, stageObjects } from '../../common/lake-io';
import { sqlList, type Duck } from '../../batch-layer/jobs/duck';
import { dayWindow, publishSimulatedDays, type PublishedDays } from './analytics-support';

const DAY = 86_400_000;
/** A Monday, so the window holds whole ISO weeks from its start. */
const START = Date.parse('2025-02-03T00:00:00Z');
const N_DAYS = 22;
const WINDOW = dayWindow(START, N_DAYS);
const { end: END, days: DAYS } = WINDOW;
const HAND = 'user_hand';
/** Day indexes the hand-built user is active on: new (0), returning (1), dormant (2), resurrecting (3, 10), at risk from 17. */
const HAND_DAYS = [0, 1, 3, 10];

let lake: PublishedDays;
let cfg: Config;
let tmp: string;
let duck: Duck;

const get = (pathAndQuery: string) => lake.get(pathAndQuery);

/** One send line per active day of the hand-built user (two events each, noon UTC). */
function handLines(): string[] {
  return HAND_DAYS.flatMap((d) =>
    ['page_view', 'video_play'].map((type, i) =>
      JSON.stringify({ event_id: `evt_hand_${d}_${i}`, event_type: type, user_id: HAND, timestamp: START + d * DAY + 12 * 3_600_000 + i * 60_000, properties: { device_type: 'web' } }),
    ),
  );
}

beforeAll(async () => {
  lake = await publishSimulatedDays('analytics', WINDOW, { seed: 14, users: 30, extraLines: handLines() });
  ({ cfg, tmp, duck } = lake);
  await duck.run(`CREATE TABLE exp_activity AS SELECT DISTINCT user_id, day FROM exp_events`);
  await duck.run(`CREATE TABLE exp_days AS SELECT unnest(${sqlList(DAYS)})::DATE AS d`);
}, 1_800_000);

afterAll(() => lake?.stop());

const dayMs = (d: unknown) => Date.parse(`${String(d)}T00:00:00Z`);

/** Expected lifecycle per period, written from the definition: active sets compared with the previous period's. */
const expectedLifecycle = (period: 'day' | 'week') => {
  // The period of as-of day d: [lo, d]; the previous one: [plo, phi]. A week is as of d (week to date).
  const lo = period === 'day' ? 'd' : `d - CAST((isodow(d) - 1) AS INTEGER)`;
  const plo = period === 'day' ? 'd - 1' : `${lo} - 7`;
  const phi = period === 'day' ? 'd - 1' : `${lo} - 1`;
  return `
    WITH periods AS (SELECT d, ${lo} AS lo, ${plo} AS plo, ${phi} AS phi FROM exp_days),
    flags AS (
      SELECT p.d, p.lo, u.user_id,
        EXISTS (SELECT 1 FROM exp_activity a WHERE a.user_id = u.user_id AND a.day BETWEEN p.lo AND p.d) AS now_active,
        EXISTS (SELECT 1 FROM exp_activity a WHERE a.user_id = u.user_id AND a.day BETWEEN p.plo AND p.phi) AS prev_active,
        (SELECT min(day) FROM exp_activity a WHERE a.user_id = u.user_id) AS first_seen
      FROM periods p, (SELECT DISTINCT user_id FROM exp_activity) u)
    SELECT CAST(d AS VARCHAR) AS as_of_day, CAST(lo AS VARCHAR) AS period_start,
      count(*) FILTER (WHERE now_active AND first_seen >= lo) AS new,
      count(*) FILTER (WHERE now_active AND first_seen < lo AND prev_active) AS returning,
      count(*) FILTER (WHERE now_active AND first_seen < lo AND NOT prev_active) AS resurrecting,
      count(*) FILTER (WHERE NOT now_active AND prev_active) AS dormant
    FROM flags GROUP BY d, lo ORDER BY d`;
};

describe('lifecycle', () => {
  it('per day: every value equals the SQL over the NDJSON, and the four add up', async () => {
    const r = await get(`/v1/metrics/lifecycle?granularity=day&from=${START}&to=${END}`);
    expect(r.status).toBe(200);
    expect(r.body.coverage).toEqual({ batch: N_DAYS, speed: 0, none: 0 });
    const expected = await duck.json(expectedLifecycle('day'));
    const actual = r.body.series[0].buckets.map((b: any) => ({ start: b.start, source: b.source, ...b.value }));
    expect(actual).toEqual(
      expected.map((e) => {
        const v = { new: Number(e.new), returning: Number(e.returning), resurrecting: Number(e.resurrecting), dormant: Number(e.dormant) };
        return { start: dayMs(e.period_start), source: 'batch', as_of_day: e.as_of_day, ...v, active: v.new + v.returning + v.resurrecting };
      }),
    );
    // new + returning + resurrecting = the day's active users; returning + dormant = the previous day's.
    const dau = new Map((await duck.json(`SELECT CAST(day AS VARCHAR) AS day, count(*) AS n FROM exp_activity GROUP BY day`)).map((x) => [x.day, Number(x.n)]));
    for (const [i, b] of r.body.series[0].buckets.entries()) {
      expect(b.value.active).toBe(dau.get(DAYS[i]) ?? 0);
      if (i > 0) expect(b.value.returning + b.value.dormant).toBe(dau.get(DAYS[i - 1]) ?? 0);
    }
    const sum = (k: string) => actual.reduce((n: number, v: any) => n + v[k], 0);
    for (const k of ['new', 'returning', 'resurrecting', 'dormant']) expect(sum(k), k).toBeGreaterThan(0);
  });

  it('per ISO week: Monday buckets, each as of its latest published day, equal to the SQL', async () => {
    const r = await get(`/v1/metrics/lifecycle?granularity=day&period=week&from=${START + 2 * DAY}&to=${END}`);
    expect(r.status).toBe(200);
    const mondays = [0, 7, 14, 21].map((i) => START + i * DAY);
    expect(r.body.series[0].buckets.map((b: any) => b.start)).toEqual(mondays);
    expect(r.body.coverage).toEqual({ batch: 4, speed: 0, none: 0 });
    const expected = await duck.json(`SELECT * FROM (${expectedLifecycle('week')}) QUALIFY as_of_day = max(as_of_day) OVER (PARTITION BY period_start) ORDER BY period_start`);
    expect(r.body.series[0].buckets.map((b: any) => ({ start: b.start, ...b.value }))).toEqual(
      expected.map((e) => {
        const v = { new: Number(e.new), returning: Number(e.returning), resurrecting: Number(e.resurrecting), dormant: Number(e.dormant) };
        return { start: dayMs(e.period_start), as_of_day: e.as_of_day, ...v, active: v.new + v.returning + v.resurrecting };
      }),
    );
  });

  it('labels the hand-built user new, returning, dormant and resurrecting (published user_lifecycle)', async () => {
    const states: Record<string, unknown> = {};
    for (const i of [0, 1, 2, 3, 10, 11]) {
      const manifest = await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest('daily', DAYS[i]));
      const [file] = await stageObjects(s3Client(cfg), cfg.s3.bucket, [manifest!.outputs.user_lifecycle], path.join(tmp, `ul-${i}`));
      const rows = await duck.json(`SELECT day_state, week_state FROM read_parquet(${sqlList([file])}) WHERE user_id = '${HAND}'`);
      states[i] = rows[0];
    }
    expect(states).toEqual({
      0: { day_state: 'new', week_state: 'new' },
      1: { day_state: 'returning', week_state: 'new' },
      2: { day_state: 'dormant', week_state: 'new' },
      3: { day_state: 'resurrecting', week_state: 'new' },
      10: { day_state: 'resurrecting', week_state: 'returning' },
      11: { day_state: 'dormant', week_state: 'returning' },
    });
  });
});

/** Expected retention as of the last day A, written from the definitions (periods as day ranges). */
function expectedRetention(mode: 'first_seen' | 'recurring' | 'unbounded', period: 'day' | 'week'): string {
  const step = period === 'day' ? 1 : 7;
  const ks = period === 'day' ? [1, 7, 14, 28] : [1, 2, 3, 4, 5, 6, 7, 8];
  const startOf = (col: string) => (period === 'day' ? col : `${col} - CAST((isodow(${col}) - 1) AS INTEGER)`);
  const cohorts =
    mode === 'recurring'
      ? `SELECT DISTINCT user_id, ${startOf('day')} AS c FROM exp_activity`
      : `SELECT user_id, ${startOf('min(day)')} AS c FROM exp_activity GROUP BY user_id`;
  const retained = (k: number) => {
    const lo = `c + ${k * step}`;
    const cond = mode === 'unbounded' ? `a.day >= ${lo}` : `a.day BETWEEN ${lo} AND ${lo} + ${step - 1}`;
    return `CASE WHEN ${lo} <= DATE '${DAYS.at(-1)}' THEN count(*) FILTER (WHERE EXISTS (SELECT 1 FROM exp_activity a WHERE a.user_id = co.user_id AND ${cond})) END AS r${k}`;
  };
  return `
    WITH co AS (${cohorts}), last AS (SELECT user_id, max(day) AS last_day FROM exp_activity GROUP BY user_id)
    SELECT CAST(c AS VARCHAR) AS cohort, count(*) AS cohort_size, ${ks.map(retained).join(', ')},
      count(*) FILTER (WHERE last_day <= DATE '${DAYS.at(-1)}' - 14) AS churned
    FROM co JOIN last USING (user_id) GROUP BY c ORDER BY c`;
}

describe('retention variants', () => {
  for (const mode of ['first_seen', 'recurring', 'unbounded'] as const) {
    for (const period of ['day', 'week'] as const) {
      it(`mode=${mode}&period=${period}: every cohort equals the SQL over the NDJSON`, async () => {
        const query = mode === 'first_seen' && period === 'day' ? '' : `&mode=${mode}&period=${period}`;
        const r = await get(`/v1/metrics/retention?granularity=day&from=${START}&to=${END}${query}`);
        expect(r.status).toBe(200);
        const prefix = period === 'day' ? 'retained_d' : 'retained_w';
        const ks = period === 'day' ? [1, 7, 14, 28] : [1, 2, 3, 4, 5, 6, 7, 8];
        const expected = new Map((await duck.json(expectedRetention(mode, period))).map((e) => [dayMs(e.cohort), e]));
        const buckets = r.body.series[0].buckets;
        expect(buckets.length).toBe(period === 'day' ? N_DAYS : 4);
        for (const b of buckets) {
          expect(b.source).toBe('batch');
          const e = expected.get(b.start);
          const want: Record<string, unknown> = { cohort_size: Number(e?.cohort_size ?? 0), churned: Number(e?.churned ?? 0) };
          for (const k of ks) want[`${prefix}${k}`] = e ? (e[`r${k}`] === null ? null : Number(e[`r${k}`])) : null;
          const got: Record<string, unknown> = { cohort_size: b.value.cohort_size, churned: b.value.churned };
          for (const k of ks) got[`${prefix}${k}`] = b.value[`${prefix}${k}`] ?? null;
          expect({ start: new Date(b.start).toISOString(), ...got }).toEqual({ start: new Date(b.start).toISOString(), ...want });
          if (e) expect(b.value.as_of_day).toBe(DAYS.at(-1));
        }
        expect(buckets.some((b: any) => b.value.cohort_size > 0)).toBe(true);
      });
    }
  }

  it('answers 400 for an unknown mode, and for an empty weekly range even after its Monday', async () => {
    expect((await get(`/v1/metrics/retention?granularity=day&mode=rolling`)).status).toBe(400);
    const wed = START + 2 * DAY;
    expect((await get(`/v1/metrics/lifecycle?granularity=day&period=week&from=${wed}&to=${wed - 1}`)).status).toBe(400);
  });
});

describe('churn risk', () => {
  const expectedChurnRisk = `
    SELECT CAST(d AS VARCHAR) AS day, u.user_id,
      (SELECT count(DISTINCT day) FROM exp_activity a WHERE a.user_id = u.user_id AND a.day BETWEEN d - 20 AND d - 7) AS active_days,
      (SELECT CAST(max(day) AS VARCHAR) FROM exp_activity a WHERE a.user_id = u.user_id AND a.day <= d) AS last_active_day
    FROM exp_days, (SELECT DISTINCT user_id FROM exp_activity) u
    WHERE active_days >= 3 AND NOT EXISTS (SELECT 1 FROM exp_activity a WHERE a.user_id = u.user_id AND a.day BETWEEN d - 6 AND d)
    ORDER BY day, user_id`;

  it('lists and counts every user at risk per day, equal to the SQL over the NDJSON', async () => {
    const r = await get(`/v1/metrics/churn_risk?granularity=day&from=${START}&to=${END}&limit=1000`);
    expect(r.status).toBe(200);
    const expected = await duck.json(expectedChurnRisk);
    const got = r.body.series[0].buckets.flatMap((b: any) => {
      expect(b.value.count).toBe(b.value.users.length);
      return b.value.users.map((u: any) => ({ day: new Date(b.start).toISOString().slice(0, 10), user_id: u.user_id, active_days: String(u.active_days), last_active_day: u.last_active_day }));
    });
    expect(got).toEqual(expected);
    expect(expected.filter((e) => e.user_id !== HAND).length).toBeGreaterThan(0);
    const hand = r.body.series[0].buckets.find((b: any) => b.start === START + 17 * DAY).value.users.find((u: any) => u.user_id === HAND);
    expect(hand).toEqual({
      user_id: HAND,
      active_days: 4,
      last_active_day: DAYS[10],
      reason: `active on 4 of the 14 days ${new Date(START - 3 * DAY).toISOString().slice(0, 10)} to ${DAYS[10]}, last on ${DAYS[10]}, and on none of the 7 days ${DAYS[11]} to ${DAYS[17]}`,
    });
  });

  it('pages each day by user_id and keeps the count', async () => {
    const all = await get(`/v1/metrics/churn_risk?granularity=day&from=${START}&to=${END}&limit=1000`);
    const page = await get(`/v1/metrics/churn_risk?granularity=day&from=${START}&to=${END}&limit=1&offset=1`);
    expect(page.status).toBe(200);
    for (const [i, b] of page.body.series[0].buckets.entries()) {
      const full = all.body.series[0].buckets[i].value;
      expect(b.value).toEqual({ count: full.count, users: full.users.slice(1, 2) });
    }
  });

  it('is in /openapi.json with the other new metrics', async () => {
    const doc = (await get('/openapi.json')).body;
    for (const p of ['/v1/metrics/churn_risk', '/v1/metrics/lifecycle', '/v1/metrics/retention']) expect(doc.paths[p], p).toBeDefined();
    const params = doc.paths['/v1/metrics/retention'].get.parameters.map((x: any) => x.name);
    expect(params).toEqual(expect.arrayContaining(['mode', 'period']));
  });
});
