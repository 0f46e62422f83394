/**
 * Runs before each test file (vitest `setupFiles`): the services a test runs in its own process log
 * to `test-results/logs/<project>/<test file>.log` instead of the runner's output. Tests provoke
 * failures on purpose (a broker restarting, Redis refusing, a workflow that must fail); their
 * warnings belong beside the test, where a person reading a red run finds them, not in a green
 * run's report. The summary reporter names the log of every failed file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { logToFile } from '../../common/log';
import { testLogPath } from './test-logs';

const testPath = expect.getState().testPath;
if (testPath && process.env.TEST_LOGS !== 'stdout') {
  const file = testLogPath(testPath);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, '');
  logToFile(file);
}
