/**
 * Temporal SDK runtime for tests: worker logs at WARN, written to the test file's log (see
 * log-setup.ts) — the "Workflow failed" warnings of tests that expect a failure are not news.
 */
import fs from 'node:fs';
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';
import { logFile } from '../../common/log';

let installed = false;
export function quietTemporalRuntime(): void {
  if (installed) return;
  installed = true;
  const file = logFile();
  const write = (e: LogEntry): void => {
    const line = JSON.stringify({ level: e.level, time: new Date(Number(e.timestampNanos / 1_000_000n)).toISOString(), component: 'temporal', msg: e.message, ...e.meta });
    if (file) fs.appendFileSync(file, `${line}\n`);
    else process.stderr.write(`${line}\n`);
  };
  try {
    Runtime.install({ logger: new DefaultLogger('WARN', write) });
  } catch {
    /* already installed by another test in this worker */
  }
}
