/**
 * How the query API answers what went wrong. A caller's mistake is a 400 naming
 * the parameter; anything of ours (Redis, DuckDB, S3) is a 503 with a request id,
 * the cause in the log under that id and never in the reply. Wrapped in
 * fastify-plugin: the handlers must cover the routes of every scope.
 */
import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from '../../common/log';
import { MergeError } from '../merge';

type RouteError = Error & {
  validation?: Array<{ instancePath: string; params: Record<string, unknown>; message?: string }>;
  validationContext?: string;
  statusCode?: number;
  code?: string;
};

const errors: FastifyPluginAsync<{ log?: Logger }> = async (app, { log }) => {
  app.setErrorHandler((err: RouteError, req, reply) => {
    if (err instanceof MergeError) {
      const message = err.message.includes(err.parameter) ? err.message : `${err.parameter}: ${err.message}`;
      return reply.code(400).send({ error: 'bad_request', parameter: err.parameter, message });
    }
    if (err.validation) {
      const v = err.validation[0];
      const parameter =
        v.instancePath.replace(/^\//, '').split('/')[0] || String(v.params.missingProperty ?? v.params.additionalProperty ?? err.validationContext ?? 'request');
      const message = v.params.additionalProperty ? `unknown parameter ${parameter}` : `${parameter} ${v.message ?? 'is invalid'}`;
      return reply.code(400).send({ error: 'bad_request', parameter, message });
    }
    if (err.statusCode === 429) return reply.code(429).send({ error: 'rate_limited', message: err.message });
    // Fastify's own 4xx (a body that is not JSON, a wrong content type…) describe the request, not the server.
    if (err.statusCode && err.statusCode < 500 && err.code?.startsWith('FST_')) return reply.code(err.statusCode).send({ error: 'bad_request', message: err.message });
    log?.error({ requestId: req.id, route: req.routeOptions.url, err: err.message, stack: err.stack }, 'request failed');
    return reply
      .code(503)
      .header('retry-after', '1')
      .send({ error: 'unavailable', message: `the request could not be answered now; retry, or quote request ${req.id} to the operator`, request_id: req.id });
  });

  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url}` }));
};

export const errorsPlugin = fp(errors, { name: 'serving-errors', fastify: '5.x' });
