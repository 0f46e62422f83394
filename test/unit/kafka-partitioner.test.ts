import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { keyPartition } from '../../common/clients';

/** kafkajs' default partitioner for a key, as the collector used it before the move to @platformatic/kafka. */
function kafkajsPartition(key: string, partitions: number): number {
  const partitionMetadata = Array.from({ length: partitions }, (_, i) => ({ partitionId: i, leader: 1, replicas: [1], isr: [1], partitionErrorCode: 0 }));
  return Partitioners.DefaultPartitioner()({ topic: 't', partitionMetadata, message: { key, value: null } });
}

describe('keyPartition', () => {
  it('puts every key where kafkajs put it, so a user keeps their partition and their order', () => {
    const keys = [
      ...Array.from({ length: 5000 }, (_, i) => `user-${i}`),
      ...Array.from({ length: 200 }, (_, i) => `${i.toString(36)}-${'x'.repeat(i % 9)}`),
      'ünïcødé-ユーザー',
      'a',
    ];
    for (const partitions of [1, 3, 6, 12, 7]) {
      for (const key of keys) expect(keyPartition(key, partitions), `${key} over ${partitions}`).toBe(kafkajsPartition(key, partitions));
    }
  });

  it('is Java murmur2 masked positive (vectors from Kafka\'s own UtilsTest)', () => {
    const java: Array<[string, number]> = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [key, hash] of java) expect(keyPartition(key, 1000)).toBe((hash & 0x7fffffff) % 1000);
  });
});
