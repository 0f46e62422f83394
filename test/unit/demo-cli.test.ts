import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../common/config';

describe('npm run demo', () => {
  it('refuses history past the lateness horizon before starting anything (it would be dead-lettered, not backfilled)', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'demo/main.ts', '--history-days', '9'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--history-days 9 reaches past the lateness horizon \(BATCH_LATENESS_HORIZON_MS, 7 days\): at most 6/);
  });
});
