/** Where a test file's service logs go: `test-results/logs/<path under test/>.log`. */
import path from 'node:path';
import { REPO_ROOT } from '../../common/config';

export function testLogPath(testPath: string): string {
  const rel = path.relative(path.join(REPO_ROOT, 'test'), testPath).replace(/\.test\.ts$/, '');
  return path.join(REPO_ROOT, 'test-results', 'logs', `${rel}.log`);
}
