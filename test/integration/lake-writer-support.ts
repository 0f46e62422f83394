/** The lake writer as its own process, for the tests that kill it or watch its memory. */
import type { ChildProcess } from 'node:child_process';
import type { Config } from '../../common/config';
import { spawnMain } from '../support/spawn-main';

/** Starts `batch-layer/lake-writer/main.ts` on the test's topics, group and bucket; `env` adds or overrides settings. */
export function spawnLakeWriter(cfg: Config, env: Record<string, string> = {}): ChildProcess {
  return spawnMain('lake writer', 'batch-layer/lake-writer/main.ts', [], {
    TOPIC_RAW: cfg.kafka.rawTopic,
    TOPIC_DLQ: cfg.kafka.dlqTopic,
    LAKE_GROUP: cfg.kafka.lakeGroup,
    S3_BUCKET: cfg.s3.bucket,
    LAKE_WRITER_PORT: '0',
    ...env,
  });
}
