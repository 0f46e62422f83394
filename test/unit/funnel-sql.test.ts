/**
 * user_funnels.sql on hand-built users, at the edges METRICS.md "Funnels" draws: steps out of
 * order, a step after the window, two attempts in a day (counted once, the best), ties in ts,
 * a repeated step, a property filter, midnight; and which days a declared funnel's read answers.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseFunnelSteps } from '../../common/config';
import { Duck } from '../../batch-layer/jobs/duck';
import type { DuckDBValue } from '@duckdb/node-api';
import type { Row } from '../../serving-layer/batch-store';
import { funnelMetric, funnelStepsText } from '../../serving-layer/metrics/funnel';

const D0 = Date.parse('2024-03-10T00:00:00Z');
const MIN = 60_000;
const HOUR = 3_600_000;

interface Ev {
  id: string;
  user: string;
  ts: number;
  type: string;
  device?: string;
  page?: string;
}

let duck: Duck;
beforeEach(async () => {
  duck = await Duck.open({ threads: 1 });
});
afterEach(() => duck.close());

/** The funnel's user_funnels rows over these events: [user, day, steps_reached, step offsets from D0, device]. */
async function funnel(steps: string, events: Ev[], windowMs = HOUR) {
  await duck.run('CREATE OR REPLACE TABLE day_events (event_id VARCHAR, event_type VARCHAR, user_id VARCHAR, ts BIGINT, device_type VARCHAR, country VARCHAR, content_id VARCHAR, page VARCHAR)');
  for (const e of events) {
    await duck.con.run('INSERT INTO day_events VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)', [e.id, e.type, e.user, e.ts, e.device ?? 'tv', 'US', e.page ?? null]);
  }
  await duck.run('CREATE OR REPLACE TABLE funnel_steps (funnel VARCHAR, step INTEGER, event_type VARCHAR, property VARCHAR, value VARCHAR, window_ms BIGINT)');
  for (const [i, s] of parseFunnelSteps(steps.split(',')).entries()) {
    await duck.con.run(`INSERT INTO funnel_steps VALUES ('f', $1, $2, $3, $4, $5)`, [i + 1, s.event_type, s.property, s.value, windowMs]);
  }
  await duck.materialize('user_funnels');
  const rows = await duck.json(`SELECT user_id, CAST(day AS VARCHAR) AS day, steps_reached, step_ts, device_type FROM user_funnels ORDER BY user_id, day`);
  return rows.map((r) => [r.user_id, r.day, r.steps_reached, (r.step_ts as string[]).map((t) => Number(t) - D0), r.device_type]);
}

const e = (user: string, id: string, ts: number, type: string, extra: Partial<Ev> = {}): Ev => ({ user, id, ts: D0 + ts, type, ...extra });

describe('user_funnels', () => {
  it('does not count steps out of order', async () => {
    const rows = await funnel('page_view,click,video_play', [e('u', 'a', HOUR, 'page_view'), e('u', 'b', HOUR + MIN, 'video_play'), e('u', 'c', HOUR + 2 * MIN, 'click')]);
    expect(rows).toEqual([['u', '2024-03-10', 2, [HOUR, HOUR + 2 * MIN], 'tv']]);
  });

  it('counts a step at exactly the window and not one 1 ms after it', async () => {
    const rows = await funnel('page_view,click,video_play', [
      e('u', 'a', HOUR, 'page_view'),
      e('u', 'b', HOUR + 30 * MIN, 'click'),
      e('u', 'c', 2 * HOUR + 1, 'video_play'),
      e('v', 'd', HOUR, 'page_view'),
      e('v', 'e', 2 * HOUR, 'click'),
    ]);
    expect(rows).toEqual([
      ['u', '2024-03-10', 2, [HOUR, HOUR + 30 * MIN], 'tv'],
      ['v', '2024-03-10', 2, [HOUR, 2 * HOUR], 'tv'],
    ]);
  });

  it('counts a user once per day, with the best attempt (the earliest among equals)', async () => {
    const rows = await funnel('page_view,click,video_play', [
      // Attempt 1 (web) reaches click only; attempt 2 (ios), hours later, reaches the play; attempt 3 (tv) also.
      e('u', 'a', HOUR, 'page_view', { device: 'web' }),
      e('u', 'b', HOUR + MIN, 'click', { device: 'web' }),
      e('u', 'c', 5 * HOUR, 'page_view', { device: 'ios' }),
      e('u', 'd', 5 * HOUR + MIN, 'click', { device: 'ios' }),
      e('u', 'e', 5 * HOUR + 2 * MIN, 'video_play', { device: 'ios' }),
      e('u', 'f', 5 * HOUR + 3 * MIN, 'page_view', { device: 'tv' }),
      e('u', 'g', 5 * HOUR + 4 * MIN, 'click', { device: 'tv' }),
      e('u', 'h', 5 * HOUR + 5 * MIN, 'video_play', { device: 'tv' }),
    ]);
    expect(rows).toEqual([['u', '2024-03-10', 3, [5 * HOUR, 5 * HOUR + MIN, 5 * HOUR + 2 * MIN], 'ios']]);
  });

  it('orders equal timestamps by event_id, lets a step repeat with a later event, and filters on a property', async () => {
    const rows = await funnel('page_view:page=home,page_view,click', [
      e('u', 'b', HOUR, 'page_view', { page: 'home' }),
      e('u', 'a', HOUR, 'page_view', { page: 'search' }),
      e('u', 'c', HOUR, 'click'),
      // w: the only home page_view has no later page_view.
      e('w', 'x', HOUR, 'page_view', { page: 'search' }),
      e('w', 'y', HOUR + MIN, 'page_view', { page: 'home' }),
      e('w', 'z', HOUR + 2 * MIN, 'click'),
    ]);
    expect(rows).toEqual([
      // a (search) sorts before b (home), so only c follows b: the second page_view step is never reached.
      ['u', '2024-03-10', 1, [HOUR], 'tv'],
      ['w', '2024-03-10', 1, [HOUR + MIN], 'tv'],
    ]);
  });

  it('belongs to the day of step 1 and stops at midnight', async () => {
    const rows = await funnel('page_view,click', [e('u', 'a', 24 * HOUR - MIN, 'page_view'), e('u', 'b', 24 * HOUR + MIN, 'click'), e('u', 'c', 24 * HOUR + 2 * MIN, 'page_view')]);
    expect(rows).toEqual([
      ['u', '2024-03-10', 1, [24 * HOUR - MIN], 'tv'],
      ['u', '2024-03-11', 1, [24 * HOUR + 2 * MIN], 'tv'],
    ]);
  });

  it('has no row for a user who never entered step 1', async () => {
    expect(await funnel('page_view,click', [e('u', 'a', HOUR, 'click')])).toEqual([]);
  });
});

describe('funnel_days', () => {
  it('records each declared funnel the day was computed for, with the definition the serving layer compares, even with no entrant', async () => {
    const declared = loadConfig({
      FUNNELS: JSON.stringify([
        { name: 'home', steps: ['page_view:page=home', 'click', 'video_play:content_id=movie_1'], window_ms: 60_000 },
        { name: 'browse', steps: ['page_view', 'click'], window_ms: 3_600_000 },
      ]),
    }).funnels;
    await duck.run('CREATE OR REPLACE TABLE funnel_steps (funnel VARCHAR, step INTEGER, event_type VARCHAR, property VARCHAR, value VARCHAR, window_ms BIGINT)');
    for (const f of declared) {
      for (const [i, s] of f.steps.entries()) await duck.con.run('INSERT INTO funnel_steps VALUES ($1, $2, $3, $4, $5, $6)', [f.name, i + 1, s.event_type, s.property, s.value, f.window_ms]);
    }
    await duck.setVariables({ day: { date: '2024-03-10' } });
    await duck.materialize('funnel_days');
    const rows = await duck.json(`SELECT CAST(day AS VARCHAR) AS day, funnel, steps, window_ms FROM funnel_days ORDER BY funnel`);
    expect(rows).toEqual(
      declared
        .map((f) => ({ day: '2024-03-10', funnel: f.name, steps: funnelStepsText(f.steps), window_ms: String(f.window_ms) }))
        .sort((a, b) => a.funnel.localeCompare(b.funnel)),
    );
    expect(rows[1].steps).toBe('page_view:page=home,click,video_play:content_id=movie_1');
  });
});

describe('FUNNELS', () => {
  it('defaults to browse_to_play, 1 h', () => {
    expect(loadConfig({}).funnels).toEqual([
      {
        name: 'browse_to_play',
        steps: ['page_view', 'click', 'video_play', 'video_complete'].map((t) => ({ event_type: t, property: null, value: null })),
        window_ms: 3_600_000,
      },
    ]);
  });

  it('reads steps with a property filter, and refuses what the API would refuse', () => {
    const one = (f: object) => loadConfig({ FUNNELS: JSON.stringify([f]) }).funnels;
    expect(one({ name: 'home', steps: ['page_view:page=home', 'video_play'], window_ms: 60_000 })[0].steps[0]).toEqual({ event_type: 'page_view', property: 'page', value: 'home' });
    const bad: Array<[object | string, RegExp]> = [
      [{ name: 'x', steps: ['page_view', 'purchase'] }, /unknown event type purchase/],
      [{ name: 'x', steps: ['page_view:target=a', 'click'] }, /content_id or page, not target/],
      [{ name: 'x', steps: ['page_view'] }, /2 to 8 steps/],
      [{ name: 'x', steps: Array.from({ length: 9 }, () => 'click') }, /2 to 8 steps/],
      [{ name: 'x', steps: ['page_view', 'click'], window_ms: 86_400_001 }, /window_ms/],
      [{ name: 'Bad Name', steps: ['page_view', 'click'] }, /unique name/],
    ];
    for (const [f, message] of bad) expect(() => one(f as object)).toThrow(message);
    expect(() => loadConfig({ FUNNELS: '[{' })).toThrow(ConfigError);
  });
});

describe("a declared funnel's batch read", () => {
  it('answers only the days asked for (those funnel_days says were computed with this definition): another day reaches neither a value nor a series', async () => {
    const DAY = 24 * HOUR;
    await duck.run('CREATE TABLE user_funnels (day DATE, funnel VARCHAR, user_id VARCHAR, device_type VARCHAR, country VARCHAR, steps_reached INTEGER, step_ts BIGINT[])');
    // Day 1 holds rows of another definition under the same name (only its device, tablet, is there).
    const rows: Array<[number, string, string, number]> = [
      [0, 'u1', 'tv', 2],
      [0, 'u2', 'tv', 1],
      [1, 'u3', 'tablet', 2],
      [2, 'u4', 'tv', 2],
    ];
    for (const [d, user, device, reached] of rows) {
      const t = D0 + d * DAY + HOUR;
      await duck.con.run(`INSERT INTO user_funnels VALUES (CAST(epoch_ms($1::BIGINT) AS DATE), 'f', $2, $3, 'US', $4, $5::BIGINT[])`, [t, user, device, reached, reached === 2 ? `[${t}, ${t + MIN}]` : `[${t}]`]);
    }
    await duck.con.run(`INSERT INTO user_funnels SELECT day, 'other', user_id, device_type, country, steps_reached, step_ts FROM user_funnels`);
    const src = {
      cfg: loadConfig({}),
      redis: undefined as never,
      batch: { has: (t: string) => t === 'user_funnels', query: async (sql: string, params: DuckDBValue[] = []) => (await duck.con.runAndReadAll(sql, params)).getRowObjectsJS() as Row[] },
    };
    const read = funnelMetric(src, { withDays: () => Promise.reject(new Error('a declared funnel reads no events')) }, 2).batch!.read;
    const buckets = [D0, D0 + 2 * DAY];
    const got = await read({
      params: { steps: parseFunnelSteps(['page_view', 'click']), windowMs: HOUR, declared: 'f', filters: {}, groupBy: ['device_type'] },
      granularity: 'day',
      buckets,
      from: D0,
      to: D0 + 3 * DAY,
      boundary: D0 + 3 * DAY,
    });
    expect(got.map((s) => ({ key: s.key, days: [...s.values.keys()], entered: [...s.values.values()].map((v) => v.entered) }))).toEqual([
      { key: { device_type: 'tv' }, days: buckets, entered: [2, 1] },
    ]);
    expect(got[0].values.get(D0)!.steps.map((s) => s.users)).toEqual([2, 1]);
  });
});
