/**
 * A service's `main.ts` as a process of its own: `node --import tsx` rather than the tsx CLI, so
 * a SIGKILL hits the service itself. Its logs (stdout) are dropped; its stderr (a crash) is
 * forwarded with a label.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from '../../common/config';

export function spawnMain(label: string, script: string, args: string[], env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, script), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[${label} ${child.pid}] ${d}`));
  return child;
}
