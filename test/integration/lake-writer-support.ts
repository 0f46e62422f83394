/** The lake writer as its own process, for the tests that kill it or watch its memory. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT, type Config } from '../../common/config';

/** Starts `batch-layer/lake-writer/main.ts` on the test's topics, group and bucket; `env` adds or overrides settings. */
export function spawnLakeWriter(cfg: Config, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'batch-layer/lake-writer/main.ts')], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      TOPIC_RAW: cfg.kafka.rawTopic,
      TOPIC_DLQ: cfg.kafka.dlqTopic,
      LAKE_GROUP: cfg.kafka.lakeGroup,
      S3_BUCKET: cfg.s3.bucket,
      LAKE_WRITER_PORT: '0',
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[lake writer ${child.pid}] ${d}`));
  return child;
}
