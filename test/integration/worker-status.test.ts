/** The batch worker as operators run it: a process with /health and /metrics that stops cleanly on SIGTERM. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { isolatedConfig } from '../support/isolated';
import { freePort } from '../../infra/proc';

it('answers /health and /metrics while polling, and exits 0 on SIGTERM', async () => {
  const cfg = await isolatedConfig('wstatus');
  const port = await freePort();
  const child = spawn(path.resolve('node_modules/.bin/tsx'), ['workflows/worker.ts'], {
    env: { ...process.env, TEMPORAL_TASK_QUEUE: cfg.temporal.taskQueue, S3_BUCKET: cfg.s3.bucket, WORKER_PORT: String(port), WORKER_HOST: '127.0.0.1', TEMPORAL_CREATE_SCHEDULES: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  try {
    let health: Response | undefined;
    for (let i = 0; i < 120 && !health?.ok; i++) {
      await new Promise((r) => setTimeout(r, 500));
      health = await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined);
    }
    expect(health?.status, output).toBe(200);
    expect(await health!.json()).toMatchObject({ status: 'ok', state: 'RUNNING', taskQueue: cfg.temporal.taskQueue });
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/^batch_worker_running 1$/m);
    expect(metrics).toContain('# TYPE batch_activity_runs_total counter');

    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
