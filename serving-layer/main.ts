/**
 * `npm run serving`: the query API and the dashboard on cfg.serving.port, the
 * batch views synced from the lake, the speed views read from Redis.
 */
import { config } from '../common/config';
import { logger } from '../common/log';
import { startServing } from './service';
import { stopOnSignals } from '../common/process';
import { Command } from 'commander';

new Command('serving')
  .description('The query API (batch ⊕ speed, OpenAPI at /openapi.json) and the dashboard at /.')
  .addHelpText(
    'after',
    `
Settings (environment, defaults in common/config.ts):
  SERVING_PORT, SERVING_HOST   where it listens (8090, 0.0.0.0)
  SERVING_API_KEYS             comma-separated read keys (dev-read-key)
  REDIS_URL, REDIS_KEY_PREFIX  the speed views
  S3_ENDPOINT, S3_BUCKET       the batch views (published runs only)`,
  )
  .parse();

const log = logger('serving');
const serving = await startServing(config(), { log });
log.info({ url: serving.url, dashboard: `${serving.url}/`, openapi: `${serving.url}/openapi.json` }, 'serving layer listening');

stopOnSignals(log, () => serving.stop(), { stopping: 'stopping', onFailure: 'unclean stop' });
