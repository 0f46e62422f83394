/**
 * The SQL of every batch metric over tiny hand-made fixtures, at the edges
 * METRICS.md draws: the 30-minute gap, midnight, clicks_to_play 10+, ties in
 * top paths, the 4-hour binge window, retention nulls and the churn boundary,
 * and which copy of a duplicate wins.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RAW_EVENT_COLUMNS } from '../../common/lake';
import { Duck, sqlFile, sqlString } from '../../batch-layer/jobs/duck';

type Ev = Partial<Record<keyof typeof RAW_EVENT_COLUMNS, string | number | null>> & { event_id: string; user_id: string; ts: number };

const DAY = '2024-03-10';
const D0 = Date.parse(`${DAY}T00:00:00Z`);
const MIN = 60_000;
const HOUR = 3_600_000;

function literal(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return 'NULL';
  return typeof v === 'number' ? String(v) : sqlString(v);
}

async function table(duck: Duck, name: string, rows: Ev[]): Promise<void> {
  const cols = Object.entries(RAW_EVENT_COLUMNS);
  const defaults: Partial<Ev> = { event_type: 'click', device_type: 'tv', country: 'US', app_version: '1.0', schema_version: 1, received_at: 0, kafka_partition: 0 };
  const values = rows.map((r, i) => {
    const row = { ...defaults, kafka_offset: i, ...r } as Record<string, string | number | null>;
    return `(${cols.map(([c, t]) => `CAST(${literal(row[c])} AS ${t})`).join(', ')})`;
  });
  await duck.run(`CREATE OR REPLACE TABLE ${name} (${cols.map(([c, t]) => `"${c}" ${t}`).join(', ')})`);
  if (values.length > 0) await duck.run(`INSERT INTO ${name} VALUES ${values.join(', ')}`);
}

let duck: Duck;
beforeEach(async () => {
  duck = await Duck.open({ threads: 1 });
});
afterEach(() => duck.close());

async function dailyFixture(events: Ev[], opts: { prev?: Ev[]; history?: { user_id: string; day: string }[]; day?: string } = {}) {
  const day = opts.day ?? DAY;
  const start = Date.parse(`${day}T00:00:00Z`);
  await duck.setVariables({ day: { date: day }, day_start: start, day_end: start + 24 * HOUR });
  await table(duck, 'day_events', events);
  await table(duck, 'prev_completes', opts.prev ?? []);
  await duck.run(`CREATE OR REPLACE TABLE history_activity (user_id VARCHAR, day DATE)`);
  for (const h of opts.history ?? []) await duck.run(`INSERT INTO history_activity VALUES (${sqlString(h.user_id)}, DATE ${sqlString(h.day)})`);
  for (const t of ['sessions', 'user_daily_activity', 'retention_cohorts_partial', 'binge_users', 'daily_aggregates_partial']) await duck.materialize(t);
}

const ev = (user: string, id: string, ts: number, type = 'click', extra: Partial<Ev> = {}): Ev => ({ event_id: id, user_id: user, ts, event_type: type, ...extra });

describe('sessions', () => {
  it('keeps a gap of exactly 30 min in the session and splits at 30 min + 1 ms', async () => {
    await dailyFixture([
      ev('u1', 'a', D0 + HOUR),
      ev('u1', 'b', D0 + HOUR + 30 * MIN),
      ev('u1', 'c', D0 + HOUR + 60 * MIN + 1),
    ]);
    const rows = await duck.json('SELECT session_idx, start_ts, end_ts, duration_ms, events FROM sessions ORDER BY session_idx');
    expect(rows).toEqual([
      { session_idx: 1, start_ts: String(D0 + HOUR), end_ts: String(D0 + HOUR + 30 * MIN), duration_ms: String(30 * MIN), events: '2' },
      { session_idx: 2, start_ts: String(D0 + HOUR + 60 * MIN + 1), end_ts: String(D0 + HOUR + 60 * MIN + 1), duration_ms: '0', events: '1' },
    ]);
  });

  it('ends sessions at midnight: each day is computed on its own', async () => {
    const events = [ev('u1', 'a', D0 - 10 * MIN), ev('u1', 'b', D0 + 5 * MIN), ev('u1', 'c', D0 + 10 * MIN)];
    await dailyFixture(events.filter((e) => e.ts >= D0));
    expect(await duck.json('SELECT session_idx, events FROM sessions')).toEqual([{ session_idx: 1, events: '2' }]);
    await dailyFixture(events.filter((e) => e.ts < D0), { day: '2024-03-09' });
    expect(await duck.json('SELECT session_idx, events FROM sessions')).toEqual([{ session_idx: 1, events: '1' }]);
  });

  it('orders equal timestamps by event_id and takes dimensions from the first event', async () => {
    await dailyFixture([
      ev('u1', 'b', D0 + HOUR, 'click', { device_type: 'web', country: 'FR', app_version: '2' }),
      ev('u1', 'a', D0 + HOUR, 'page_view', { device_type: 'tv', country: 'US', app_version: '1' }),
    ]);
    expect(await duck.json('SELECT device_type, country, app_version FROM sessions')).toEqual([{ device_type: 'tv', country: 'US', app_version: '1' }]);
  });
});

describe('clicks to play and paths', () => {
  it('counts navigation before the first play, buckets 10+, and keeps the last 5 types of the path', async () => {
    const t = D0 + 2 * HOUR;
    const twelve = Array.from({ length: 12 }, (_, i) => ev('u1', `c${String(i).padStart(2, '0')}`, t + i * MIN, i % 2 ? 'search' : 'click'));
    await dailyFixture([
      ...twelve,
      ev('u1', 'd1', t + 12 * MIN, 'video_seek'), // not navigation, still part of the path
      ev('u1', 'd2', t + 13 * MIN, 'video_play'),
      ev('u1', 'd3', t + 14 * MIN, 'click'),
      ev('u1', 'd4', t + 15 * MIN, 'video_play'),
      ev('u2', 'e1', t, 'video_play'),
      ev('u3', 'f1', t, 'page_view'),
      ev('u3', 'f2', t + MIN, 'click'),
    ]);
    expect(await duck.json('SELECT user_id, has_play, clicks_to_play, path FROM sessions ORDER BY user_id')).toEqual([
      { user_id: 'u1', has_play: true, clicks_to_play: '12', path: 'click>search>click>search>video_seek' },
      { user_id: 'u2', has_play: true, clicks_to_play: '0', path: '(direct)' },
      { user_id: 'u3', has_play: false, clicks_to_play: null, path: null },
    ]);
    await duck.materialize('clicks_to_play');
    const [c] = await duck.json('SELECT * FROM clicks_to_play');
    expect(c).toMatchObject({ play_sessions: '2', no_play_sessions: '1', avg_clicks_to_play: 6, clicks_0: '1', clicks_9: '0', clicks_10_plus: '1' });
  });

  it('counts only the session\'s own navigation, keeps a short path whole, and takes a NULL first dimension as it is', async () => {
    const t = D0 + 3 * HOUR;
    await dailyFixture([
      // Session 1: navigation and a play, then 31 min of silence.
      ev('u1', 'a1', t, 'click', { app_version: null }),
      ev('u1', 'a2', t + MIN, 'search', { app_version: '2' }),
      ev('u1', 'a3', t + 2 * MIN, 'video_play'),
      // Session 2: its own two clicks before a play at position 3; the earlier session's navigation does not count.
      ev('u1', 'b1', t + 33 * MIN, 'page_view'),
      ev('u1', 'b2', t + 34 * MIN, 'click'),
      ev('u1', 'b3', t + 35 * MIN, 'video_play'),
      ev('u1', 'b4', t + 36 * MIN, 'search'),
      // Session 3: no navigation before its play, which is its second event.
      ev('u1', 'c1', t + 2 * HOUR, 'video_pause'),
      ev('u1', 'c2', t + 2 * HOUR + MIN, 'video_play'),
    ]);
    expect(await duck.json('SELECT session_idx, app_version, events, has_play, clicks_to_play, path FROM sessions ORDER BY session_idx')).toEqual([
      { session_idx: 1, app_version: null, events: '3', has_play: true, clicks_to_play: '2', path: 'click>search' },
      { session_idx: 2, app_version: '1.0', events: '4', has_play: true, clicks_to_play: '2', path: 'page_view>click' },
      { session_idx: 3, app_version: '1.0', events: '2', has_play: true, clicks_to_play: '0', path: 'video_pause' },
    ]);
  });

  it('ranks the top 20 paths by count, ties by path text ascending', async () => {
    const events: Ev[] = [];
    // 25 distinct one-step paths, path "click" three times, "search" and "page_view" twice each (a tie).
    const plan: [string, number][] = [['click', 3], ['search', 2], ['page_view', 2]];
    const others = ['video_seek', 'video_pause', 'rebuffer', 'notification_view', 'video_stop', 'app_install', 'video_resume', 'video_complete'];
    let u = 0;
    for (const [type, n] of plan) for (let i = 0; i < n; i++) {
      u++;
      events.push(ev(`u${u}`, `x${u}a`, D0 + HOUR, type), ev(`u${u}`, `x${u}b`, D0 + HOUR + MIN, 'video_play'));
    }
    for (const a of others) for (const b of others.slice(0, 3)) {
      u++;
      events.push(ev(`u${u}`, `x${u}a`, D0 + HOUR, a), ev(`u${u}`, `x${u}b`, D0 + HOUR + 1, b), ev(`u${u}`, `x${u}c`, D0 + HOUR + 2, 'video_play'));
    }
    await dailyFixture(events);
    await duck.materialize('top_paths');
    const rows = await duck.json('SELECT rank, path, sessions FROM top_paths');
    expect(rows).toHaveLength(20);
    expect(rows.slice(0, 4)).toEqual([
      { rank: 1, path: 'click', sessions: '3' },
      { rank: 2, path: 'page_view', sessions: '2' },
      { rank: 3, path: 'search', sessions: '2' },
      { rank: 4, path: 'app_install>rebuffer', sessions: '1' },
    ]);
    const singles = rows.slice(3).map((r) => r.path as string);
    expect(singles).toEqual([...singles].sort());
  });
});

describe('binge', () => {
  it('counts a window of exactly 4 h, not 4 h + 1 ms, and windows starting the day before', async () => {
    const c = (user: string, id: string, ts: number) => ev(user, id, ts, 'video_complete');
    await dailyFixture(
      [
        c('exact', 'e1', D0 + HOUR), c('exact', 'e2', D0 + 2 * HOUR), c('exact', 'e3', D0 + 5 * HOUR),
        c('over', 'o1', D0 + HOUR), c('over', 'o2', D0 + 2 * HOUR), c('over', 'o3', D0 + 5 * HOUR + 1),
        c('prev', 'p3', D0 + 30 * MIN),
        ev('notype', 'n1', D0 + HOUR, 'video_play'), ev('notype', 'n2', D0 + HOUR + 1, 'video_play'), ev('notype', 'n3', D0 + HOUR + 2, 'video_play'),
      ],
      { prev: [c('prev', 'p1', D0 - 3 * HOUR), c('prev', 'p2', D0 - HOUR), c('early', 'y1', D0 - 2 * HOUR), c('early', 'y2', D0 - HOUR), c('early', 'y3', D0 - MIN)] },
    );
    expect(await duck.json('SELECT user_id, first_binge_ts FROM binge_users')).toEqual([
      { user_id: 'exact', first_binge_ts: String(D0 + 5 * HOUR) },
      { user_id: 'prev', first_binge_ts: String(D0 + 30 * MIN) },
    ]);
  });
});

describe('retention and churn', () => {
  it('reports retained_dK only when C+K <= A and churns at last active <= A - 14', async () => {
    // As of 2024-03-10: cohort 2024-02-25 (A-14), 2024-03-03 (A-7), 2024-03-09 (A-1), 2024-03-10 (A).
    await dailyFixture([ev('c1', 'a', D0 + HOUR), ev('n1', 'b', D0 + HOUR)], {
      history: [
        { user_id: 'old_churned', day: '2024-02-25' },
        { user_id: 'old_active', day: '2024-02-25' }, { user_id: 'old_active', day: '2024-02-26' },
        { user_id: 'c1', day: '2024-03-03' },
        { user_id: 'c2', day: '2024-03-03' }, { user_id: 'c2', day: '2024-03-04' },
        { user_id: 'y1', day: '2024-03-09' },
      ],
    });
    await duck.materialize('retention_cohorts');
    expect(await duck.json('SELECT * FROM retention_cohorts ORDER BY cohort_day')).toEqual([
      { as_of_day: DAY, cohort_day: '2024-02-25', cohort_size: '2', retained_d1: '1', retained_d7: '0', retained_d14: '0', retained_d28: null, churned: '1' },
      { as_of_day: DAY, cohort_day: '2024-03-03', cohort_size: '2', retained_d1: '1', retained_d7: '1', retained_d14: null, retained_d28: null, churned: '0' },
      { as_of_day: DAY, cohort_day: '2024-03-09', cohort_size: '1', retained_d1: '0', retained_d7: null, retained_d14: null, retained_d28: null, churned: '0' },
      { as_of_day: DAY, cohort_day: DAY, cohort_size: '1', retained_d1: null, retained_d7: null, retained_d14: null, retained_d28: null, churned: '0' },
    ]);
    expect(await duck.json(`SELECT user_id, first_seen_day, sessions FROM user_daily_activity ORDER BY user_id`)).toEqual([
      { user_id: 'c1', first_seen_day: '2024-03-03', sessions: '1' },
      { user_id: 'n1', first_seen_day: DAY, sessions: '1' },
    ]);
  });
});

describe('one big table', () => {
  it('has exactly the grouping sets of METRICS.md with exact distinct users at every level', async () => {
    await dailyFixture([
      ev('u1', 'a', D0 + HOUR, 'page_view', { device_type: 'tv', country: 'US', app_version: '1' }),
      ev('u1', 'b', D0 + 5 * HOUR, 'video_play', { device_type: 'web', country: 'US', app_version: '1' }),
      ev('u2', 'c', D0 + HOUR, 'app_install', { device_type: 'tv', country: 'FR', app_version: '2' }),
    ]);
    await duck.materialize('daily_aggregates_with_dimensions');
    const rows = await duck.json(
      `SELECT device_type || '/' || app_version || '/' || country AS k, total_events, total_installs, total_views, total_plays, total_sessions, unique_users
       FROM daily_aggregates_with_dimensions`,
    );
    const byKey = Object.fromEntries(rows.map(({ k, ...r }) => [k as string, Object.values(r).map(Number)]));
    expect(Object.keys(byKey).sort()).toEqual(
      ['ALL/ALL/ALL', 'ALL/ALL/FR', 'ALL/ALL/US', 'tv/1/US', 'tv/2/FR', 'web/1/US', 'tv/ALL/US', 'tv/ALL/FR', 'web/ALL/US', 'tv/ALL/ALL', 'web/ALL/ALL'].sort(),
    );
    expect(byKey['ALL/ALL/ALL']).toEqual([3, 1, 1, 1, 3, 2]);
    expect(byKey['ALL/ALL/US']).toEqual([2, 0, 1, 1, 2, 1]);
    expect(byKey['tv/ALL/ALL']).toEqual([2, 1, 1, 0, 2, 2]);
  });
});

describe('hourly de-duplication', () => {
  it('keeps the copy received first and counts natural vs synthetic duplicates, not copies of one Kafka message', async () => {
    const H = D0 + 3 * HOUR;
    await duck.setVariables({ hour: `${DAY}T03`, hour_start: H, hour_end: H + HOUR });
    await table(duck, 'raw_events', [
      ev('u1', 'a', H + 1, 'click', { received_at: 20, kafka_partition: 1, kafka_offset: 7, page: 'late copy' }),
      ev('u1', 'a', H + 1, 'click', { received_at: 10, kafka_partition: 1, kafka_offset: 5, page: 'first' }),
      ev('u1', 'a', H + 1, 'click', { received_at: 10, kafka_partition: 1, kafka_offset: 5, page: 'first' }), // same message twice
      ev('u1', 'a', H + 1, 'click', { received_at: 30, kafka_partition: 2, kafka_offset: 1, page: 'first' }),
      ev('u2', 'b', H + 2, 'video_play', { received_at: 10, kafka_partition: 0, kafka_offset: 9 }),
    ]);
    await duck.materialize('events');
    expect(await duck.json('SELECT event_id, page, kafka_offset FROM events')).toEqual([
      { event_id: 'a', page: 'first', kafka_offset: '5' },
      { event_id: 'b', page: null, kafka_offset: '9' },
    ]);
    expect(await duck.json(sqlFile('raw_duplicates'))).toEqual([{ natural: '1', synthetic: '1' }]);
    for (const t of ['hourly_events', 'hourly_users', 'hourly_playback']) await duck.materialize(t);
    const checks = await duck.select('quality_hourly');
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(await duck.json(`SELECT events FROM hourly_events WHERE event_type = 'ALL' AND device_type = 'ALL' AND country = 'ALL' AND app_version = 'ALL'`)).toEqual([{ events: '2' }]);
    expect(await duck.json(`SELECT content_id, plays, pause_rate FROM hourly_playback`)).toEqual([
      { content_id: 'ALL', plays: '1', pause_rate: 0 },
      { content_id: null, plays: '1', pause_rate: 0 },
    ]);
  });
});

describe('de-duplication across hours', () => {
  /** Another hour's index rows, as event_ids.sql publishes them. */
  async function neighbours(rows: { event_id: string; hour_id: string; received_at: number; kafka_partition: number; kafka_offset: number; payload_digest: number; counted: boolean }[]) {
    await duck.run(`CREATE OR REPLACE TABLE neighbour_ids (event_id VARCHAR, hour_id VARCHAR, received_at BIGINT, kafka_partition INTEGER, kafka_offset BIGINT, payload_digest UBIGINT, counted BOOLEAN)`);
    for (const r of rows) {
      await duck.run(`INSERT INTO neighbour_ids VALUES (${sqlString(r.event_id)}, ${sqlString(r.hour_id)}, ${r.received_at}, ${r.kafka_partition}, ${r.kafka_offset}, ${r.payload_digest}, ${r.counted})`);
    }
  }

  it('drops the ids another hour received first (Kafka position breaks a tie), counts them as synthetic, and names the hours that counted one it won', async () => {
    const H = D0 + 5 * HOUR;
    await duck.setVariables({ hour: `${DAY}T05`, hour_start: H, hour_end: H + HOUR });
    await table(duck, 'raw_events', [
      ev('u1', 'lost', H + 1, 'click', { received_at: 50, kafka_partition: 1, kafka_offset: 9 }),
      ev('u1', 'tie-lost', H + 2, 'click', { received_at: 40, kafka_partition: 1, kafka_offset: 8 }),
      ev('u1', 'won', H + 3, 'click', { received_at: 10, kafka_partition: 1, kafka_offset: 2 }),
      ev('u2', 'alone', H + 4, 'click', { received_at: 10, kafka_partition: 0, kafka_offset: 3 }),
    ]);
    await neighbours([
      { event_id: 'lost', hour_id: `${DAY}T02`, received_at: 20, kafka_partition: 1, kafka_offset: 4, payload_digest: 1, counted: true },
      { event_id: 'tie-lost', hour_id: `${DAY}T09`, received_at: 40, kafka_partition: 1, kafka_offset: 7, payload_digest: 2, counted: true },
      { event_id: 'won', hour_id: `${DAY}T08`, received_at: 30, kafka_partition: 1, kafka_offset: 6, payload_digest: 3, counted: true },
    ]);
    await duck.materialize('hour_firsts', 'events');
    await duck.materialize('events', 'events_across_hours');
    await duck.materialize('event_ids');
    expect((await duck.json('SELECT event_id FROM events ORDER BY 1')).map((r) => r.event_id)).toEqual(['alone', 'won']);
    expect(await duck.json('SELECT event_id, counted FROM event_ids ORDER BY 1')).toEqual([
      { event_id: 'alone', counted: true },
      { event_id: 'lost', counted: false },
      { event_id: 'tie-lost', counted: false },
      { event_id: 'won', counted: true },
    ]);
    expect(await duck.json(sqlFile('cross_hour_duplicates'))).toEqual([{ natural: '0', synthetic: '2' }]);
    // 08 counted a copy of `won` received after this hour's: 08 must re-run.
    await duck.run('CREATE OR REPLACE VIEW conflict_ids AS SELECT * FROM neighbour_ids');
    expect(await duck.json(sqlFile('dedupe_conflicts'))).toEqual([{ hour_id: `${DAY}T08`, ours_later: false }]);
  });
});
