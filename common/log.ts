/** Structured logging: one pino logger per process, child loggers per component. */
import { pino, type Logger } from 'pino';
import { config } from './config';

let root: Logger | undefined;

export function logger(component: string): Logger {
  root ??= pino({
    level: config().logLevel,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
  return root.child({ component });
}

export type { Logger };
