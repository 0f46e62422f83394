/**
 * Who may call what, decided on the matched route: every route of the query
 * API and the collector declares its access level in its route config
 * (`config: { access: 'read' }`), and this plugin attaches the key check to that
 * route alone. Nothing here looks at the raw URL: the router has already decoded
 * and matched it, so `/%761/metrics/events` is the `/v1/metrics/events` route,
 * with that route's check, and a path no route matches is a 404 before any key
 * is asked for.
 *
 * Keys are compared through their SHA-256 digests with `timingSafeEqual`, against
 * every configured key, so neither the length nor the position of a match shows
 * in the timing. A key is never logged: the logs and the audit trail name it by
 * its id, a short digest.
 *
 * The rate limit (rate-limit.ts) is registered before this plugin and runs on the
 * same routes, before the key check; both resolve the caller through
 * `principalOf`, once per request.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';

/** What a route needs. `read` is satisfied by a read or an admin key. */
export type Access = 'none' | 'ingest' | 'read' | 'admin';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Declared by every route this project registers under /v1/ (the plugin refuses a route without it). */
    access?: Access;
  }
  interface FastifyRequest {
    /** The caller's key, once a protected route's check has accepted it. */
    principal?: Principal;
  }
}

export interface Principal {
  /** `key_` + the first 12 hex digits of the key's SHA-256: safe to log, stable across restarts. */
  keyId: string;
  scopes: ReadonlySet<Access>;
}

export function keyIdOf(key: string): string {
  return `key_${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

export class KeyRing {
  private readonly entries: Array<{ digest: Buffer; principal: Principal }> = [];

  /** `grants`: each key with the access levels it carries. A key listed twice gets the union. */
  constructor(grants: Array<{ keys: readonly string[]; scopes: readonly Access[] }>) {
    const byKey = new Map<string, Set<Access>>();
    for (const g of grants) {
      for (const k of g.keys) {
        if (k === '') continue;
        const s = byKey.get(k) ?? new Set<Access>();
        for (const a of g.scopes) s.add(a);
        byKey.set(k, s);
      }
    }
    for (const [key, scopes] of byKey) {
      this.entries.push({ digest: createHash('sha256').update(key).digest(), principal: { keyId: keyIdOf(key), scopes } });
    }
  }

  /** The principal whose key this is, or null. Compares against every key in constant time per key. */
  match(presented: string): Principal | null {
    const d = createHash('sha256').update(presented).digest();
    let found: Principal | null = null;
    for (const e of this.entries) if (timingSafeEqual(e.digest, d)) found = e.principal;
    return found;
  }
}

/** The key a request presents: `x-api-key`, else (where allowed) `Authorization: Bearer <key>`. */
function presentedKey(req: FastifyRequest, bearer: boolean): string | undefined {
  const header = req.headers['x-api-key'];
  if (typeof header === 'string' && header !== '') return header;
  if (!bearer) return undefined;
  const auth = req.headers.authorization;
  if (typeof auth === 'string' && /^bearer\s+/i.test(auth)) {
    const k = auth.replace(/^bearer\s+/i, '').trim();
    return k === '' ? undefined : k;
  }
  return undefined;
}

const PRINCIPAL_CACHE = Symbol('principal');
type WithCache = FastifyRequest & { [PRINCIPAL_CACHE]?: Principal | null };

export interface AuthOptions {
  ring: KeyRing;
  /** Also accept `Authorization: Bearer <key>` (the collector does, for SDKs that only speak that). */
  bearer?: boolean;
  /** What the 401 says is needed, per access level. */
  describe?: Partial<Record<Access, string>>;
  /** Replies 401 with `WWW-Authenticate: Bearer` (the collector's SDK-facing behaviour). */
  challenge?: boolean;
}

const DEFAULT_NEEDS: Record<Access, string> = {
  none: '',
  ingest: 'an ingestion API key is required in x-api-key',
  read: 'a read API key is required in x-api-key',
  admin: 'an admin key is required in x-api-key',
};

/** The request's principal (null: no key or an unknown one), resolved once per request: the rate limit and the check share it. */
export function principalOf(req: FastifyRequest, ring: KeyRing, bearer = false): Principal | null {
  const r = req as WithCache;
  if (r[PRINCIPAL_CACHE] === undefined) {
    const k = presentedKey(req, bearer);
    r[PRINCIPAL_CACHE] = k === undefined ? null : ring.match(k);
  }
  return r[PRINCIPAL_CACHE];
}

function allows(p: Principal, need: Access): boolean {
  if (need === 'none') return true;
  if (p.scopes.has(need)) return true;
  return need === 'read' && p.scopes.has('admin');
}

function checker(need: Access, opts: AuthOptions): onRequestHookHandler {
  return async function requireKey(req: FastifyRequest, reply: FastifyReply) {
    const p = principalOf(req, opts.ring, opts.bearer);
    const presented = presentedKey(req, opts.bearer ?? false) !== undefined;
    if (p !== null && allows(p, need)) {
      req.principal = p;
      return;
    }
    if (opts.challenge) void reply.header('www-authenticate', 'Bearer');
    const needs = opts.describe?.[need] ?? DEFAULT_NEEDS[need];
    const message = p !== null ? `this key may not do that: ${needs}` : presented ? `the API key is not valid: ${needs}` : needs;
    return reply.code(401).send({ error: 'unauthorized', message });
  };
}

/**
 * Registers the per-route key check. Register it before the routes: it works
 * through `onRoute`, on each route as it is added. Wrapped in fastify-plugin so
 * that hook sees the routes of every scope.
 */
export const authPlugin = fp<AuthOptions>(
  async (app, opts) => {
    app.addHook('onRoute', (route) => {
      const access = route.config?.access;
      if (access === undefined) {
        // Static files, /health and the like carry no access; anything under /v1/ must say what it needs.
        if (route.url.startsWith('/v1')) throw new Error(`route ${route.method} ${route.url} declares no access level (config.access)`);
        return;
      }
      if (access === 'none') return;
      const hook = checker(access, opts);
      const existing = route.onRequest;
      route.onRequest = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
    });
  },
  { name: 'clickstream-auth', fastify: '5.x' },
);
