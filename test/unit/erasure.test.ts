/** Erasure's pure parts: request ids, the keyed hash, and which rows count as an erased user's. */
import { describe, expect, it } from 'vitest';
import { checkUsers, erasedRows, erasureRequestId, userHash } from '../../batch-layer/erasure/lake';
import { withDuck, sqlString } from '../../batch-layer/jobs/duck';
import { NonRetryableBatchError } from '../../batch-layer/jobs/errors';

describe('erasure request ids and hashes', () => {
  it('derive from the set of users under the key: order and repeats do not matter, the key does', () => {
    const a = erasureRequestId('k1-secret-key', ['u2', 'u1']);
    expect(a).toMatch(/^er-[0-9a-f]{16}$/);
    expect(erasureRequestId('k1-secret-key', ['u1', 'u2', 'u1'])).toBe(a);
    expect(erasureRequestId('k2-secret-key', ['u1', 'u2'])).not.toBe(a);
    expect(erasureRequestId('k1-secret-key', ['u1'])).not.toBe(a);
    expect(userHash('k1-secret-key', 'u1')).toMatch(/^[0-9a-f]{64}$/);
    expect(userHash('k1-secret-key', 'u1')).not.toContain('u1');
  });

  it('refuse no user and ids the contract would not accept', () => {
    expect(() => checkUsers([])).toThrow(NonRetryableBatchError);
    expect(() => checkUsers([''])).toThrow(NonRetryableBatchError);
    expect(() => checkUsers(['x'.repeat(129)])).toThrow(NonRetryableBatchError);
    expect(checkUsers(['b', 'a', 'b'])).toEqual(['a', 'b']);
  });
});

describe('the rows of erased users', () => {
  it('in a dead letter: the id as a JSON string or ending a cut line, never an id it is a prefix of', async () => {
    const lines = [
      ['{"user_id":"u1","event_type":"x"}', true],
      ['{"user_id": "u1"}', true],
      ['{"event_id":"e","user_id":"u1', true], // cut right after the id
      ['{"user_id":"u10"}', false],
      ['{"user_id":"u', false],
      ['{"user_id":1}', false],
      ['not json u1', false],
    ] as const;
    const matched = await withDuck({ threads: 1 }, async (duck) => {
      await duck.run(`CREATE TEMP TABLE erased_users AS SELECT 'u1' AS id`);
      await duck.run(`CREATE TABLE dl AS SELECT * FROM (VALUES ${lines.map(([l], i) => `(${i}, ${sqlString(l)})`).join(', ')}) v(i, raw)`);
      return (await duck.rows(`SELECT i FROM dl WHERE ${erasedRows('raw')} ORDER BY i`)).map((r) => Number(r.i));
    });
    expect(matched).toEqual(lines.flatMap(([, m], i) => (m ? [i] : [])));
  });

  it('in a table with user ids: exactly theirs', async () => {
    const n = await withDuck({ threads: 1 }, async (duck) => {
      await duck.run(`CREATE TEMP TABLE erased_users AS SELECT unnest(['u1', 'u3']) AS id`);
      await duck.run(`CREATE TABLE t AS SELECT * FROM (VALUES ('u1'), ('u10'), ('u2'), ('u3'), (NULL)) v(user_id)`);
      return duck.rows(`SELECT user_id FROM t WHERE ${erasedRows('user_id')} ORDER BY user_id`);
    });
    expect(n.map((r) => r.user_id)).toEqual(['u1', 'u3']);
  });
});
