/**
 * The failure modes of `infra:up` — a port taken, a missing tool, a half-finished
 * download — and `infra:down` stopping only what it started. Each case uses its own
 * STACK_HOME and ports so the shared stack the other tests use is never touched.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { isAlive, readPid } from '../../infra/proc';
import { services, stackPaths } from '../../infra/services';
import { down, status, up } from '../../infra/stack';
import { freePort } from '../../infra/proc';

const homes: string[] = [];
function tempStack(env: Record<string, string> = {}) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'stack-'));
  homes.push(home);
  return loadConfig({ ...process.env, STACK_HOME: home, STACK_START_TIMEOUT_SEC: '20', ...env });
}
afterEach(async () => {
  for (const home of homes.splice(0)) {
    await down({ cfg: loadConfig({ ...process.env, STACK_HOME: home }), report: () => {} }).catch(() => {});
    fs.rmSync(home, { recursive: true, force: true });
  }
});

describe('infra up/down', () => {
  it('starts, reports and stops its own Redis by pid, leaving the shared stack alone', async () => {
    const cfg = tempStack({ REDIS_PORT: String(await freePort()) });
    const sharedRedisPid = readPid(stackPaths(loadConfig()).pid('redis'));

    const first = await up({ cfg, only: ['redis'], report: () => {} });
    expect(first.started).toEqual(['redis']);
    const pid = readPid(stackPaths(cfg).pid('redis'))!;
    expect(isAlive(pid)).toBe(true);
    expect((await status({ cfg, only: ['redis'] }))[0]).toMatchObject({ name: 'redis', running: true, healthy: true });

    const again = await up({ cfg, only: ['redis'], report: () => {} });
    expect(again).toMatchObject({ started: [], reused: ['redis'] });

    expect(await down({ cfg, only: ['redis'], report: () => {} })).toEqual(['redis']);
    expect(isAlive(pid)).toBe(false);
    expect(fs.existsSync(stackPaths(cfg).pid('redis'))).toBe(false);
    if (sharedRedisPid !== null) expect(isAlive(sharedRedisPid)).toBe(true);
  });

  it('fails fast with the port and the variable to change when a port is taken', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const cfg = tempStack({ REDIS_PORT: String(port) });
      const t0 = Date.now();
      await expect(up({ cfg, only: ['redis'], report: () => {} })).rejects.toThrow(
        new RegExp(`port ${port} needed by redis is in use by another process.*REDIS_PORT`),
      );
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      blocker.close();
    }
  });

  it('names the missing tool and how to get it, without starting anything', async () => {
    const cfg = tempStack({ MINIO_PORT: String(await freePort()), MINIO_CONSOLE_PORT: String(await freePort()) });
    const savedPath = process.env.PATH;
    process.env.PATH = '/usr/bin:/bin'; // no /usr/local/go/bin: `go` is missing
    try {
      await expect(up({ cfg, only: ['minio'], report: () => {} })).rejects.toThrow(/missing tools[\s\S]*go \(for minio\): install Go/);
    } finally {
      process.env.PATH = savedPath;
    }
    expect(fs.existsSync(stackPaths(cfg).pid('minio'))).toBe(false);
  });

  it('repairs a half-finished Kafka download on the next run', async () => {
    const cfg = tempStack();
    const p = stackPaths(cfg);
    // What an interrupted earlier run leaves: a partial folder and libs/ without its completion mark.
    fs.mkdirSync(path.join(p.kafka, 'libs.partial'), { recursive: true });
    fs.writeFileSync(path.join(p.kafka, 'libs.partial', 'kafka-clients-4.1.2.jar'), 'truncated');
    fs.mkdirSync(path.join(p.kafka, 'libs'), { recursive: true });
    fs.writeFileSync(path.join(p.kafka, 'libs', 'kafka_2.13-4.1.2.jar'), 'truncated');

    const kafka = services(cfg).find((s) => s.name === 'kafka')!;
    expect(kafka.installed()).toBe(false);
    await kafka.install();
    expect(kafka.installed()).toBe(true);
    expect(fs.existsSync(path.join(p.kafka, 'libs.partial'))).toBe(false);
    const jar = path.join(p.kafka, 'libs', 'kafka_2.13-4.1.2.jar');
    expect(fs.statSync(jar).size).toBeGreaterThan(1_000_000);
  });
});
