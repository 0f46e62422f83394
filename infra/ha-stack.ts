/**
 * A replicated stack of its own (the HA tests, `bench/chaos.ts`): a temp STACK_HOME and free ports,
 * so it never meets the shared single-node stack; the Kafka jars and the MinIO and Temporal binaries
 * are linked from the shared home. Also: SIGKILLing one of its processes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type Config } from '../common/config';
import { freePort, isAlive, readPid, sleep } from './proc';
import { stackPaths } from './services';
import { down, up, type Report } from './stack';

/** Services the HA tests need (Temporal is not part of them; the chaos run adds it). */
export const HA_SERVICES = ['kafka', 'redis', 'sentinel', 'minio'];

export interface HaStack {
  cfg: Config;
  /** The settings that point a process (a spawned service, a test's config) at this stack. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startHaStack(report: Report, opts: { services?: string[] } = {}): Promise<HaStack> {
  const only = opts.services ?? HA_SERVICES;
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
    // Always our own ports: the shared stack's Temporal must not be reused, even when `only` skips ours.
    TEMPORAL_PORT: String(await freePort()),
    TEMPORAL_UI_PORT: String(await freePort()),
  };
  const base = loadConfig({ ...process.env, ...stackEnv });
  // Whatever the shared stack's variables say, the children talk to this stack.
  const env = {
    ...stackEnv,
    KAFKA_BROKERS: base.kafka.brokers.join(','),
    REDIS_SENTINELS: base.redis.sentinels.join(','),
    S3_ENDPOINT: base.s3.endpoint,
    TEMPORAL_ADDRESS: `127.0.0.1:${stackEnv.TEMPORAL_PORT}`,
  };
  const cfg = loadConfig({ ...process.env, ...env });
  try {
    await up({ cfg, only, report });
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
