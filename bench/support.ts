/** Small helpers the benchmark scripts share. */
import { InvalidArgumentError } from 'commander';

export { findPid, freePort } from '../infra/proc';

/** `KEY=VALUE` pairs from a repeatable option, as an environment object. */
export function envPairs(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${kv}"`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}
