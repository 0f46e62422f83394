/**
 * Integration tests run against the real stack. This starts it (or reuses one
 * that is up) through the same code as `npm run infra:up`, and stops at the end
 * only what it started itself (set KEEP_STACK=1 to leave it running).
 */
import { down, up } from '../../infra/stack';

export default async function setup(): Promise<() => Promise<void>> {
  const t0 = Date.now();
  const result = await up({ report: (line) => process.stderr.write(`[stack] ${line}\n`) });
  process.stderr.write(
    `[stack] ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (started: ${result.started.join(', ') || 'none'}; reused: ${result.reused.join(', ') || 'none'})\n`,
  );
  return async () => {
    if (process.env.KEEP_STACK === '1' || result.started.length === 0) return;
    await down({ only: result.started, report: (line) => process.stderr.write(`[stack] ${line}\n`) });
  };
}
