/** Structured logging: one pino logger per process, child loggers per component. */
import { pino, type Logger } from 'pino';
import { config } from './config';

let root: Logger | undefined;
let file: string | undefined;

export function logger(component: string): Logger {
  root ??= pino(
    {
      level: config().logLevel,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Synchronous appends: a test's process may end right after the line that explains its failure.
    file ? pino.destination({ dest: file, sync: true, mkdir: true, append: true }) : undefined,
  );
  return root.child({ component });
}

/**
 * Send this process's logs to a file instead of stdout. The test runner does this per test file,
 * so the warnings that tests provoke on purpose (a broker restarting, Redis refusing) stay readable
 * beside the test and out of the runner's report. Processes a test spawns keep logging to stdout.
 */
export function logToFile(path: string): void {
  file = path;
  root = undefined;
}

/** Where this process's logs go: a file set by {@link logToFile}, or undefined for stdout. */
export function logFile(): string | undefined {
  return file;
}

export type { Logger };
