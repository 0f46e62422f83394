/** Temporal SDK runtime for tests: worker logs at WARN so test output stays readable. */
import { DefaultLogger, Runtime } from '@temporalio/worker';

let installed = false;
export function quietTemporalRuntime(): void {
  if (installed) return;
  installed = true;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    /* already installed by another test in this worker */
  }
}
