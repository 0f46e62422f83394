/**
 * The serving layer's in-memory index of the batch layer's per-user history (BatchUserIndex): built from
 * `user_daily_activity` in a real in-memory DuckDB, it must answer every user as the per-user query it
 * replaced did (first seen day, first event, active days from a day on), keep answering from the previous
 * version while a new one builds, and take the daily boundary of the version it was built from.
 */
import { DuckDBInstance, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dayOf } from '../../common/contract';
import { BatchUserIndex, type IndexedBatchSource } from '../../serving-layer/metrics/user-features';
import { prng } from '../support/prng';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const TODAY = dayOf(NOW);
const dayAt = (back: number) => dayOf(NOW - back * DAY);

let instance: DuckDBInstance;
let con: DuckDBConnection;

/** A batch source over the DuckDB connection, with a version the test bumps as a sync would. */
function source(): IndexedBatchSource & { version: number; gate?: Promise<void> } {
  const src: IndexedBatchSource & { version: number; gate?: Promise<void> } = {
    version: 1,
    has: () => true,
    async *streamColumns(sql: string, params: DuckDBValue[] = []) {
      if (src.gate) await src.gate;
      const result = await con.stream(sql, params);
      for (let c = await result.fetchChunk(); c !== null && c.rowCount > 0; c = await result.fetchChunk()) yield c.getColumns();
    },
  };
  return src;
}

async function insert(rows: Array<{ user: string; day: string; firstSeen: string; firstTs: number }>): Promise<void> {
  for (const r of rows) {
    await con.run('INSERT INTO user_daily_activity VALUES ($1, $2::DATE, $3::DATE, $4)', [r.user, r.day, r.firstSeen, r.firstTs]);
  }
}

/** The per-user query the index replaced (serving-layer/metrics/user-features.ts before the index). */
async function direct(user: string, from: string): Promise<{ firstSeenDay: string; firstEventTs: number | null; days: string[] } | null> {
  const reader = await con.runAndReadAll(
    `SELECT strftime(min(first_seen_day), '%Y-%m-%d') AS f, min(first_event_ts) AS t,
            string_agg(strftime(day, '%Y-%m-%d'), ',' ORDER BY day) FILTER (WHERE day >= $2::DATE) AS d
     FROM user_daily_activity WHERE user_id = $1`,
    [user, from],
  );
  const r = reader.getRowObjectsJS()[0];
  if (!r || r.f === null) return null;
  return { firstSeenDay: String(r.f), firstEventTs: r.t === null ? null : Number(r.t), days: r.d === null ? [] : String(r.d).split(',') };
}

beforeAll(async () => {
  instance = await DuckDBInstance.create(':memory:');
  con = await instance.connect();
});
afterAll(() => {
  con.closeSync();
  instance.closeSync();
});

describe('BatchUserIndex', () => {
  it('answers every user as the per-user query did, on random histories (seeded)', async () => {
    await con.run('CREATE OR REPLACE TABLE user_daily_activity (user_id VARCHAR, day DATE, first_seen_day DATE, first_event_ts BIGINT)');
    const rnd = prng(20261201);
    const rows: Array<{ user: string; day: string; firstSeen: string; firstTs: number }> = [];
    for (let u = 0; u < 300; u++) {
      const user = u % 7 === 0 ? `ü-${u} 'quoted'` : `user-${u}`;
      const first = Math.floor(rnd() * 60);
      for (let back = first; back >= 0; back--) {
        if (rnd() < 0.3) rows.push({ user, day: dayAt(back), firstSeen: dayAt(first), firstTs: NOW - first * DAY + Math.floor(rnd() * DAY) });
      }
    }
    await insert(rows);
    const index = new BatchUserIndex(source(), () => NOW - DAY, () => NOW);
    const from = dayAt(27);
    for (const user of [...new Set(rows.map((r) => r.user)), 'nobody']) {
      const got = await index.lookup(user, from);
      expect(got.user, user).toEqual(await direct(user, from));
      expect(got.boundary).toBe(NOW - DAY);
    }
    expect(index.builds).toBe(1);
    expect(index.users).toBe(new Set(rows.map((r) => r.user)).size);
  });

  it('keeps the days from 38 back to tomorrow (the 28-day window with room), and first seen from any depth', async () => {
    await con.run('CREATE OR REPLACE TABLE user_daily_activity (user_id VARCHAR, day DATE, first_seen_day DATE, first_event_ts BIGINT)');
    await insert([
      { user: 'a', day: dayAt(300), firstSeen: dayAt(300), firstTs: NOW - 300 * DAY },
      { user: 'a', day: dayAt(39), firstSeen: dayAt(300), firstTs: NOW - 39 * DAY },
      { user: 'a', day: dayAt(38), firstSeen: dayAt(300), firstTs: NOW - 38 * DAY },
      { user: 'a', day: dayAt(0), firstSeen: dayAt(300), firstTs: NOW },
      { user: 'a', day: dayAt(-1), firstSeen: dayAt(300), firstTs: NOW + DAY },
    ]);
    const index = new BatchUserIndex(source(), () => null, () => NOW);
    const got = await index.lookup('a', dayAt(39));
    expect(got.user).toEqual({ firstSeenDay: dayAt(300), firstEventTs: NOW - 300 * DAY, days: [dayAt(38), TODAY, dayAt(-1)] });
    expect((await index.lookup('a', dayAt(27))).user?.days).toEqual([TODAY, dayAt(-1)]);
  });

  it('answers from the previous version, with its boundary, while the next one builds', async () => {
    await con.run('CREATE OR REPLACE TABLE user_daily_activity (user_id VARCHAR, day DATE, first_seen_day DATE, first_event_ts BIGINT)');
    await insert([{ user: 'b', day: dayAt(2), firstSeen: dayAt(2), firstTs: NOW - 2 * DAY }]);
    let boundary = NOW - DAY;
    const src = source();
    const index = new BatchUserIndex(src, () => boundary, () => NOW);
    expect((await index.lookup('b', dayAt(27))).user?.days).toEqual([dayAt(2)]);

    // A sync loads yesterday and moves the boundary; the rebuild is held until the gate opens.
    await insert([{ user: 'b', day: dayAt(1), firstSeen: dayAt(2), firstTs: NOW - 2 * DAY }]);
    let open!: () => void;
    src.gate = new Promise<void>((r) => (open = r));
    src.version = 2;
    boundary = NOW;
    const stale = await index.lookup('b', dayAt(27));
    expect(stale).toEqual({ user: { firstSeenDay: dayAt(2), firstEventTs: NOW - 2 * DAY, days: [dayAt(2)] }, boundary: NOW - DAY });
    open();
    await expect.poll(() => index.builds).toBe(2);
    expect(await index.lookup('b', dayAt(27))).toEqual({ user: { firstSeenDay: dayAt(2), firstEventTs: NOW - 2 * DAY, days: [dayAt(2), dayAt(1)] }, boundary: NOW });
  });

  it('knows nobody while the batch layer has published no user_daily_activity', async () => {
    const index = new BatchUserIndex({ ...source(), has: () => false }, () => null, () => NOW);
    expect(await index.lookup('a', dayAt(27))).toEqual({ user: null, boundary: null });
  });
});
