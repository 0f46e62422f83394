/**
 * kafkajs 2.2.4 (maintenance mode, no fix coming) groups each send's messages
 * per partition with `Object.assign(result, { [p]: [...current, message] })`
 * inside a reduce: quadratic in the messages per partition. Measured here:
 * 4 µs per message at 1,000 per partition, 6 µs at 3,000 — more than encoding
 * the record — plus as much short-lived garbage.
 *
 * This module puts a linear version with the same result (an object of
 * partition → messages in their original order) into the require cache under
 * the module's own path, before kafkajs' producer requires it. It must be
 * evaluated before anything loads kafkajs: import it first. If kafkajs was
 * loaded earlier, it changes nothing and `linearGroupingInstalled` is false.
 * The collector produces through @platformatic/kafka now; bench/kafka-clients.ts
 * imports this to measure kafkajs as the collector ran it.
 */
import { createRequire } from 'node:module';

type Message = { partition?: number | null };
type Args = { topic: string; partitionMetadata: unknown[]; messages: Message[]; partitioner: (a: { topic: string; partitionMetadata: unknown[]; message: Message }) => number };

function groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner }: Args): Record<number, Message[]> {
  if (partitionMetadata.length === 0) return {};
  const result: Record<number, Message[]> = {};
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

const require = createRequire(import.meta.url);

function install(): boolean {
  try {
    const target = require.resolve('kafkajs/src/producer/groupMessagesPerPartition.js');
    const user = require.resolve('kafkajs/src/producer/sendMessages.js');
    if (require.cache[user] || require.cache[target]) return false; // too late: kafkajs already captured the original
    const Module = require('node:module') as { new (id: string): NodeJS.Module & { filename: string; loaded: boolean; paths: string[] } };
    const m = new Module(target);
    m.filename = target;
    m.loaded = true;
    m.exports = groupMessagesPerPartition;
    require.cache[target] = m;
    return true;
  } catch {
    return false; // another kafkajs layout: keep its own
  }
}

export const linearGroupingInstalled = install();
