/** Process lifecycle shared by the long-running services. */
import type { Logger } from './log';

/**
 * Stop gracefully on the first SIGINT/SIGTERM: run `stop` once, exit 0 when it
 * finishes, exit 1 (logging `onFailure`) when it throws.
 */
export function stopOnSignals(log: Logger, stop: () => Promise<void>, messages: { stopping: string; onFailure: string }): void {
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, messages.stopping);
      stop().then(
        () => process.exit(0),
        (err: Error) => {
          log.error({ err: err.message }, messages.onFailure);
          process.exit(1);
        },
      );
    });
  }
}
