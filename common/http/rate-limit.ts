/**
 * The rate limit of the routes that need a key: a caller with a valid key is
 * limited per key id, anybody else (failed attempts included) per client
 * address, so guessing keys is throttled too. Register it before authPlugin:
 * the limit is checked before the key, and both act through `onRoute`.
 */
import rateLimit from '@fastify/rate-limit';
import fp from 'fastify-plugin';
import { principalOf, type KeyRing } from './auth';

export interface RateLimitOptions {
  /** The same ring (and bearer setting) as authPlugin's: the caller is resolved once for both. */
  ring: KeyRing;
  bearer?: boolean;
  /** Requests per minute per key id on protected routes. */
  perKeyPerMin: number;
  /** Requests per minute per client address without a valid key (failed attempts included). */
  anonymousPerMin: number;
}

/** Wrapped in fastify-plugin: @fastify/rate-limit's `global` limit must reach the routes of every scope. */
export const rateLimitPlugin = fp<RateLimitOptions>(
  async (app, opts) => {
    await app.register(rateLimit, {
      global: true,
      hook: 'onRequest',
      timeWindow: 60_000,
      keyGenerator: (req) => {
        const p = principalOf(req, opts.ring, opts.bearer);
        return p ? `k:${p.keyId}` : `ip:${req.ip}`;
      },
      max: (_req, key) => (key.startsWith('k:') ? opts.perKeyPerMin : opts.anonymousPerMin),
      // Routes that need no key (health, metrics, the dashboard) are not limited.
      allowList: (req) => (req.routeOptions.config.access ?? 'none') === 'none',
      errorResponseBuilder: (_req, ctx) => ({ statusCode: 429, error: 'rate_limited', message: `more than ${ctx.max} requests per minute; retry in ${ctx.after}` }),
    });
  },
  { name: 'clickstream-rate-limit', fastify: '5.x' },
);
