/**
 * The HA tests' helpers: the replicated stack (shared with `bench/chaos.ts`, in infra/ha-stack.ts)
 * and reading a topic back in full.
 */
import { kafkaClient } from '../../common/clients';
import type { Config } from '../../common/config';

export { HA_SERVICES, killService, startHaStack, type HaStack } from '../../infra/ha-stack';

/** Every record of a topic, from the beginning up to the high watermarks read at the call: event_id → copies. */
export async function readTopicIds(cfg: Config, topic = cfg.kafka.rawTopic, timeoutMs = 60_000): Promise<Map<string, number>> {
  const kafka = kafkaClient(cfg, 'ha-test-reader');
  const admin = kafka.admin();
  await admin.connect();
  const high = Object.fromEntries((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, Number(o.high)]));
  await admin.disconnect();
  const total = Object.values(high).reduce((a, b) => a + b, 0);
  const ids = new Map<string, number>();
  let read = 0;
  const consumer = kafka.consumer({ groupId: `ha-test-reader-${Date.now()}-${Math.random().toString(36).slice(2)}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${read} of ${total} records of ${topic}`)), timeoutMs);
    void consumer.run({
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          if (Number(m.offset) >= high[batch.partition]) continue;
          const id = (JSON.parse(m.value!.toString()) as { event_id: string }).event_id;
          ids.set(id, (ids.get(id) ?? 0) + 1);
          read++;
        }
        if (read >= total) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
    if (total === 0) resolve();
  });
  try {
    await done;
  } finally {
    await consumer.disconnect();
  }
  return ids;
}
