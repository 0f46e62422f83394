/**
 * Schemathesis (PyPI), the property-based API fuzzer the security tests drive
 * from the services' OpenAPI documents. Installed once into its own virtualenv
 * under STACK_HOME, like every other tool the project runs, pinned so that a
 * fixed seed generates the same cases on every machine.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../common/config';

export const SCHEMATHESIS_VERSION = '4.32.5';

/** Path of the `st` executable, installing it on first use. Throws with the pip output when that fails. */
export function ensureSchemathesis(cfg: Config, report: (line: string) => void = () => {}): string {
  const venv = path.join(cfg.stack.home, 'tools', `schemathesis-${SCHEMATHESIS_VERSION}`);
  const st = path.join(venv, 'bin', 'st');
  // Written last: a half-finished install (an interrupted pip) is redone, not used.
  const done = path.join(venv, '.installed');
  if (fs.existsSync(done)) return st;
  const python = ['python3', 'python'].find((p) => spawnSync(p, ['--version']).status === 0);
  if (!python) throw new Error('schemathesis needs Python 3 (python3) with the venv module');
  report(`installing schemathesis ${SCHEMATHESIS_VERSION} into ${venv} (first run only)`);
  fs.mkdirSync(path.dirname(venv), { recursive: true });
  fs.rmSync(venv, { recursive: true, force: true });
  const steps: string[][] = [
    [python, '-m', 'venv', venv],
    [path.join(venv, 'bin', 'pip'), 'install', '--quiet', '--disable-pip-version-check', `schemathesis==${SCHEMATHESIS_VERSION}`],
  ];
  for (const [cmd, ...args] of steps) {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 15 * 60_000 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  fs.writeFileSync(done, `${new Date().toISOString()}\n`);
  return st;
}
