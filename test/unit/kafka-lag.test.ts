/** Consumer-group lag reads (common/topics.ts) against a broker that is still loading its group coordinator. */
import { describe, expect, it } from 'vitest';
import { KafkaJSProtocolError } from 'kafkajs';
import { groupLags, retryRetriable } from '../../common/topics';

// What kafkajs throws for error code 14 (the shape of its own errorCodes entry).
// kafkajs' typings only know its constructor's message form; at run time it takes the errorCodes entry.
const protocolError = (e: { type: string; code: number; retriable: boolean; message: string }): Error => new KafkaJSProtocolError(e as unknown as Error);
const loading = () => protocolError({ type: 'COORDINATOR_LOAD_IN_PROGRESS', code: 14, retriable: true, message: "The coordinator is loading and hence can't process requests for this group" });

function admin(failFirst: number, error: () => Error = loading) {
  let calls = 0;
  return {
    calls: () => calls,
    fetchTopicOffsets: async () => [
      { partition: 0, offset: '100', high: '100', low: '0' },
      { partition: 1, offset: '40', high: '40', low: '10' },
    ],
    fetchOffsets: async ({ topics }: { groupId: string; topics: string[] }) => {
      calls += 1;
      if (calls <= failFirst) throw error();
      return topics.map((topic) => ({ topic, partitions: [{ partition: 0, offset: '90', metadata: null }] }));
    },
  };
}

describe('groupLags', () => {
  it('waits out a coordinator that is still loading (the demo crashed on it after a cold start)', async () => {
    const a = admin(3);
    // Partition 0: 100 - 90; partition 1: nothing committed, so everything retained (40 - 10).
    expect(await groupLags(a as never, [{ groupId: 'g', topics: ['events.raw'] }], 5_000)).toEqual([40]);
    expect(a.calls()).toBe(4);
  });

  it('throws a non-retriable error at once', async () => {
    const a = admin(1, () => protocolError({ type: 'GROUP_AUTHORIZATION_FAILED', code: 30, retriable: false, message: 'denied' }));
    await expect(groupLags(a as never, [{ groupId: 'g', topics: ['events.raw'] }], 5_000)).rejects.toThrow('denied');
    expect(a.calls()).toBe(1);
  });

  it('gives up on a retriable error after its timeout', async () => {
    const started = Date.now();
    await expect(retryRetriable(() => Promise.reject(loading()), 600, 100)).rejects.toThrow(/coordinator is loading/);
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
