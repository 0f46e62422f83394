/**
 * `npm run serving`: the query API and the dashboard on cfg.serving.port, the
 * batch views synced from the lake, the speed views read from Redis.
 */
import { runService } from '../common/run-service';
import { startServing } from './service';

await runService({
  name: 'serving',
  description: 'The query API (batch ⊕ speed, OpenAPI at /openapi.json) and the dashboard at /.',
  help: `
Settings (environment, defaults in common/config.ts):
  SERVING_PORT, SERVING_HOST   where it listens (8090, 0.0.0.0)
  SERVING_API_KEYS             comma-separated read keys (dev-read-key)
  SERVING_ADMIN_KEYS           comma-separated admin keys: read + PUT /v1/admin/* (dev-admin-key)
  SERVING_CORS_ORIGINS         origins allowed to call the API from a browser (*)
  SERVING_RATE_LIMIT_PER_MIN   requests per minute per key (6000)
  SERVING_ANONYMOUS_RATE_LIMIT_PER_MIN  per client address without a valid key (120)
  SERVING_TRUST_PROXY          false | true | hop count | proxy addresses (false)
  NODE_ENV=production          refuses dev-* keys, CORS *, a 0.0.0.0 bind (ALLOW_INSECURE_SETTINGS=true overrides)
  REDIS_URL, REDIS_KEY_PREFIX  the speed views
  S3_ENDPOINT, S3_BUCKET       the batch views (published runs only)`,
  async start({ cfg, log }) {
    const serving = await startServing(cfg, { log });
    log.info({ url: serving.url, dashboard: `${serving.url}/`, openapi: `${serving.url}/openapi.json` }, 'serving layer listening');
    return serving;
  },
});
