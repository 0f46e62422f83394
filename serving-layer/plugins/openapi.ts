/**
 * The OpenAPI document, built by @fastify/swagger from the routes' own schemas
 * and served at GET /openapi.json. Wrapped in fastify-plugin: swagger collects
 * the routes of every scope registered after it.
 */
import swagger from '@fastify/swagger';
import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';

const openapi: FastifyPluginAsync = async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Clickstream query API',
        version: '1.0.0',
        description:
          'Batch views (exact) below the watermark W, speed layer (approximate, seconds fresh) above it, merged per bucket. Every bucket says its source, whether it is exact, and whether any layer covers it.',
      },
      components: { securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } } },
      security: [{ apiKey: [] }],
    },
  });
  app.get('/openapi.json', { config: { access: 'none' }, schema: { hide: true } }, async () => app.swagger());
};

export const openapiPlugin = fp(openapi, { name: 'serving-openapi', fastify: '5.x' });
