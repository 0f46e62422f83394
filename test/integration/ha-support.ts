/**
 * The replicated stack for the HA tests: its own STACK_HOME (a temp folder) and free ports, so it
 * never meets the shared single-node stack; the Kafka jars and MinIO binary are linked from the
 * shared home. Also: reading a topic back in full, and SIGKILLing one of the stack's processes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { kafkaClient } from '../../common/clients';
import { loadConfig, type Config } from '../../common/config';
import { freePort, isAlive, readPid, sleep } from '../../infra/proc';
import { stackPaths } from '../../infra/services';
import { down, up } from '../../infra/stack';

/** Services the HA tests need (Temporal is not part of them). */
export const HA_SERVICES = ['kafka', 'redis', 'sentinel', 'minio'];

export interface HaStack {
  cfg: Config;
  /** The settings that point a process (a spawned service, a test's config) at this stack. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startHaStack(report: (line: string) => void): Promise<HaStack> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'stack-ha-'));
  const ports = async (n: number) => (await Promise.all(Array.from({ length: n }, () => freePort()))).join(',');
  const stackEnv: Record<string, string> = {
    STACK_HOME: home,
    STACK_HA: 'true',
    STACK_HA_INSTALL_FROM: loadConfig().stack.home,
    STACK_START_TIMEOUT_SEC: '120',
    KAFKA_HA_PORTS: await ports(3),
    KAFKA_HA_CONTROLLER_PORTS: await ports(3),
    REDIS_PORT: String(await freePort()),
    REDIS_REPLICA_PORT: String(await freePort()),
    REDIS_SENTINEL_PORTS: await ports(3),
    MINIO_PORT: String(await freePort()),
    MINIO_CONSOLE_PORT: String(await freePort()),
  };
  const base = loadConfig({ ...process.env, ...stackEnv });
  // Whatever the shared stack's variables say, the children talk to this stack.
  const env = {
    ...stackEnv,
    KAFKA_BROKERS: base.kafka.brokers.join(','),
    REDIS_SENTINELS: base.redis.sentinels.join(','),
    S3_ENDPOINT: base.s3.endpoint,
  };
  const cfg = loadConfig({ ...process.env, ...env });
  try {
    await up({ cfg, only: HA_SERVICES, report });
  } catch (err) {
    await down({ cfg, report }).catch(() => {});
    throw err;
  }
  return {
    cfg,
    env,
    async stop() {
      await down({ cfg, report });
      fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/** SIGKILL one service of the stack (kafka-2, redis…); resolves once the process is gone. */
export async function killService(cfg: Config, name: string): Promise<number> {
  const pid = readPid(stackPaths(cfg).pid(name));
  if (pid === null || !isAlive(pid)) throw new Error(`${name} is not running`);
  process.kill(pid, 'SIGKILL');
  while (isAlive(pid)) await sleep(50);
  return pid;
}

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
