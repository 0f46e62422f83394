/**
 * The SQL of the product-analytics tables (METRICS.md "Lifecycle", "Retention variants",
 * "Churn risk") over hand-made activity: a user who is new, returning, resurrecting and
 * dormant in turn, the window edges of churn risk, and each retention mode.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Duck, sqlString } from '../../batch-layer/jobs/duck';

let duck: Duck;
beforeEach(async () => {
  duck = await Duck.open({ threads: 1 });
});
afterEach(() => duck.close());

const addDays = (day: string, n: number) => new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);

/**
 * Day `day` as the daily run sees it: `history` is every earlier day's activity, `today` the
 * users active on the day. Computes the shard tables and then the published aggregates.
 */
async function runDay(day: string, activity: { user_id: string; day: string }[]): Promise<void> {
  await duck.setVariables({ day: { date: day } });
  await duck.run(`CREATE OR REPLACE TABLE history_activity (user_id VARCHAR, day DATE)`);
  await duck.run(`CREATE OR REPLACE TABLE user_daily_activity (user_id VARCHAR, day DATE)`);
  for (const a of activity) {
    if (a.day < day) await duck.run(`INSERT INTO history_activity VALUES (${sqlString(a.user_id)}, DATE ${sqlString(a.day)})`);
    if (a.day === day) await duck.run(`INSERT INTO user_daily_activity VALUES (${sqlString(a.user_id)}, DATE ${sqlString(a.day)})`);
  }
  for (const t of ['user_lifecycle', 'retention_variants_partial', 'churn_risk']) await duck.materialize(t);
  for (const t of ['lifecycle', 'retention_variants']) await duck.materialize(t);
}

const active = (user: string, days: string[]) => days.map((day) => ({ user_id: user, day }));

describe('lifecycle', () => {
  // 2024-03-04 is a Monday. u: new on Mon, returning Tue, gone Wed (dormant), back Fri (resurrecting).
  const MON = '2024-03-04';
  const acts = [...active('u', [MON, addDays(MON, 1), addDays(MON, 4)]), ...active('v', [addDays(MON, -7), addDays(MON, 1)])];

  it('labels one user new, returning, dormant and resurrecting by day', async () => {
    const states: Record<string, string | null> = {};
    for (let i = 0; i < 6; i++) {
      const day = addDays(MON, i);
      await runDay(day, acts);
      const rows = await duck.json(`SELECT day_state FROM user_lifecycle WHERE user_id = 'u'`);
      states[day] = rows.length > 0 ? (rows[0].day_state as string | null) : 'absent';
    }
    expect(states).toEqual({
      [MON]: 'new',
      [addDays(MON, 1)]: 'returning',
      [addDays(MON, 2)]: 'dormant',
      [addDays(MON, 3)]: null, // in the table for its week, no state by day
      [addDays(MON, 4)]: 'resurrecting',
      [addDays(MON, 5)]: 'dormant',
    });
  });

  it('labels weeks as of the day, and the four counts add up', async () => {
    // v: active the week before, not on Monday: dormant for the week as of Monday; Tuesday brings v back.
    await runDay(MON, acts);
    expect(await duck.json(`SELECT user_id, week_start, week_state FROM user_lifecycle ORDER BY user_id`)).toEqual([
      { user_id: 'u', week_start: MON, week_state: 'new' },
      { user_id: 'v', week_start: MON, week_state: 'dormant' },
    ]);
    await runDay(addDays(MON, 1), acts);
    expect(await duck.json(`SELECT period, period_start, new_users, returning_users, resurrecting_users, dormant_users FROM lifecycle ORDER BY period`)).toEqual([
      { period: 'day', period_start: addDays(MON, 1), new_users: '0', returning_users: '1', resurrecting_users: '1', dormant_users: '0' },
      { period: 'week', period_start: MON, new_users: '1', returning_users: '1', resurrecting_users: '0', dormant_users: '0' },
    ]);
    // The next week: u was active last week, not yet this week (dormant); on its Friday, u is back (returning? no: not active last week).
    await runDay(addDays(MON, 7), acts);
    expect(await duck.json(`SELECT user_id, week_state FROM user_lifecycle ORDER BY user_id`)).toEqual([
      { user_id: 'u', week_state: 'dormant' },
      { user_id: 'v', week_state: 'dormant' },
    ]);
  });
});

describe('churn risk', () => {
  const D = '2024-03-31';
  it('needs 3 active days within D-20 .. D-7 and none within D-6 .. D, with the reason', async () => {
    await runDay(D, [
      ...active('at_risk', [addDays(D, -20), addDays(D, -12), addDays(D, -7)]),
      ...active('recent', [addDays(D, -20), addDays(D, -12), addDays(D, -7), addDays(D, -6)]),
      ...active('two_days', [addDays(D, -21), addDays(D, -20), addDays(D, -7)]),
      ...active('today', [addDays(D, -15), addDays(D, -14), addDays(D, -13), D]),
    ]);
    expect(await duck.json(`SELECT user_id, active_days, last_active_day, reason FROM churn_risk`)).toEqual([
      {
        user_id: 'at_risk',
        active_days: '3',
        last_active_day: addDays(D, -7),
        reason: `active on 3 of the 14 days ${addDays(D, -20)} to ${addDays(D, -7)}, last on ${addDays(D, -7)}, and on none of the 7 days ${addDays(D, -6)} to ${D}`,
      },
    ]);
  });
});

describe('retention variants', () => {
  const MON = '2024-03-04';
  it('counts recurring, unbounded and weekly cohorts, NULL until C+K starts', async () => {
    // a: first seen MON, active MON+1 and MON+9. b: first seen MON+1, active MON+2.
    const acts = [...active('a', [MON, addDays(MON, 1), addDays(MON, 9)]), ...active('b', [addDays(MON, 1), addDays(MON, 2)])];
    await runDay(addDays(MON, 9), acts);
    const get = (mode: string, period: string, cohort: string, k: number) =>
      duck.json(`SELECT cohort_size, retained, churned FROM retention_variants WHERE mode = '${mode}' AND period = '${period}' AND cohort_start = DATE '${cohort}' AND k = ${k}`);
    // recurring by day: MON+1 holds a and b; on MON+2 only b is back; on MON+8 nobody.
    expect(await get('recurring', 'day', addDays(MON, 1), 1)).toEqual([{ cohort_size: '2', retained: '1', churned: '0' }]);
    expect(await get('recurring', 'day', addDays(MON, 1), 7)).toEqual([{ cohort_size: '2', retained: '0', churned: '0' }]);
    expect(await get('recurring', 'day', addDays(MON, 1), 14)).toEqual([{ cohort_size: '2', retained: null, churned: '0' }]);
    // unbounded by day: a (first seen MON) is active on or after MON+7 (on MON+9); b is not.
    expect(await get('unbounded', 'day', MON, 7)).toEqual([{ cohort_size: '1', retained: '1', churned: '0' }]);
    expect(await get('unbounded', 'day', addDays(MON, 1), 7)).toEqual([{ cohort_size: '1', retained: '0', churned: '0' }]);
    // weekly cohorts: both first seen in week MON; a is back in week MON+7.
    expect(await get('first_seen', 'week', MON, 1)).toEqual([{ cohort_size: '2', retained: '1', churned: '0' }]);
    expect(await get('first_seen', 'week', MON, 2)).toEqual([{ cohort_size: '2', retained: null, churned: '0' }]);
    expect(await get('recurring', 'week', addDays(MON, 7), 1)).toEqual([{ cohort_size: '1', retained: null, churned: '0' }]);
    expect(await duck.json(`SELECT count(*) AS n FROM retention_variants WHERE mode = 'first_seen' AND period = 'day'`)).toEqual([{ n: '0' }]);
  });
});
