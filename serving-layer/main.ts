/**
 * `npm run serving`: the query API and the dashboard on cfg.serving.port, the
 * batch views synced from the lake, the speed views read from Redis.
 */
import { config } from '../common/config';
import { logger } from '../common/log';
import { startServing } from './service';
import { stopOnSignals } from '../common/process';

const log = logger('serving');
const serving = await startServing(config(), { log });
log.info({ url: serving.url, dashboard: `${serving.url}/`, openapi: `${serving.url}/openapi.json` }, 'serving layer listening');

stopOnSignals(log, () => serving.stop(), { stopping: 'stopping', onFailure: 'unclean stop' });
