/**
 * Settings that are fine on a laptop and wrong on the internet. With
 * NODE_ENV=production a service refuses to start while any of them is in force,
 * naming the variable to change; ALLOW_INSECURE_SETTINGS=true overrides (for a
 * staging box behind a firewall, say) and is logged as a warning.
 */
import { ConfigError, DEFAULT_ERASURE_AUDIT_KEY, type Config } from '../config';

export type HttpService = 'serving' | 'collector';

/** Each problem names the environment variable that fixes it. */
export function insecureSettings(service: HttpService, cfg: Config): string[] {
  const out: string[] = [];
  const devKeys = (name: string, keys: readonly string[]) => {
    const dev = keys.filter((k) => k.startsWith('dev-'));
    if (dev.length > 0) out.push(`${name} contains the development key${dev.length > 1 ? 's' : ''} ${dev.join(', ')}: set your own keys`);
  };
  const bindAll = (name: string, host: string) => {
    if (host === '0.0.0.0' || host === '::') out.push(`${name}=${host} listens on every interface: bind to the address your load balancer reaches`);
  };
  if (service === 'serving') {
    devKeys('SERVING_API_KEYS', cfg.serving.apiKeys);
    devKeys('SERVING_ADMIN_KEYS', cfg.serving.adminKeys);
    if (cfg.serving.corsOrigins.includes('*')) out.push('SERVING_CORS_ORIGINS=* lets any web page call the API: list the dashboard origins');
    bindAll('SERVING_HOST', cfg.serving.host);
    // The serving layer starts erasures (POST /v1/admin/erasures); with the published default key anyone can test an id against the audit records.
    if (cfg.erasure.auditKey === DEFAULT_ERASURE_AUDIT_KEY) out.push('ERASURE_AUDIT_KEY is the local-stack default: set a secret (it keys the hashes of erased users in the audit records)');
  } else {
    devKeys('COLLECTOR_API_KEYS', cfg.collector.apiKeys);
    bindAll('COLLECTOR_HOST', cfg.collector.host);
  }
  return out;
}

export interface ProductionCheck {
  /** Problems found (empty when none, or outside production). */
  problems: string[];
  /** True when production was asked for and ALLOW_INSECURE_SETTINGS=true let the problems through. */
  overridden: boolean;
}

/** Throws a ConfigError naming every problem when NODE_ENV=production and no override is set. */
export function checkProductionSettings(service: HttpService, cfg: Config, env: Record<string, string | undefined> = process.env): ProductionCheck {
  if (env.NODE_ENV !== 'production') return { problems: [], overridden: false };
  const problems = insecureSettings(service, cfg);
  if (problems.length === 0) return { problems, overridden: false };
  if (env.ALLOW_INSECURE_SETTINGS === 'true') return { problems, overridden: true };
  throw new ConfigError(
    `the ${service} refuses to start with NODE_ENV=production:\n  - ${problems.join('\n  - ')}\n(set ALLOW_INSECURE_SETTINGS=true to start anyway)`,
  );
}
