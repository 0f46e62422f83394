/**
 * The lake writer as one running service: the writer and a small HTTP server with
 * GET /metrics (Prometheus) and GET /health. Used by main.ts and, in-process, by the
 * integration tests and the demo.
 */
import type { Registry } from 'prom-client';
import type { Config } from '../../common/config';
import { logger } from '../../common/log';
import { startStatusServer, type StatusServer } from '../../common/status-server';
import { LakeWriter, type LakeWriterOptions, type LakeWriterStatus } from './writer';

export interface LakeWriterService {
  /** Flush every open file, wait for the uploads and commit; then leave the group. Idempotent. */
  stop(): Promise<void>;
  /** Roll every open file now and wait until it is uploaded and its offsets committed. */
  flush(): Promise<void>;
  status(): LakeWriterStatus;
  /** The /metrics and /health port (useful when configured as 0). */
  port: number;
  registry: Registry;
}

export interface LakeWriterServiceOptions extends LakeWriterOptions {
  /** Serve /metrics and /health (default true). */
  http?: boolean;
}

export async function startLakeWriter(cfg: Config, opts: LakeWriterServiceOptions = {}): Promise<LakeWriterService> {
  const log = logger('lake-writer');
  const writer = new LakeWriter(cfg, opts);
  await writer.start();
  let server: StatusServer | null = null;
  if (opts.http !== false) {
    server = await startStatusServer({
      host: cfg.lake.host,
      port: cfg.lake.port,
      registry: writer.registry,
      log,
      health: () => {
        const status = writer.condition();
        return { ok: status === 'ok', ...writer.status(), status };
      },
    });
  }
  const port = server?.port ?? 0;
  const { lake, kafka } = cfg;
  log.info({ group: kafka.lakeGroup, topics: [kafka.rawTopic, kafka.dlqTopic], bucket: cfg.s3.bucket, rollBytes: lake.rollBytes, rollAgeSec: lake.rollAgeSec, port }, 'lake writer started');

  let stopped: Promise<void> | null = null;
  return {
    port,
    registry: writer.registry,
    status: () => writer.status(),
    flush: () => writer.flush(),
    stop() {
      stopped ??= writer.stop().finally(() => server?.close());
      return stopped;
    },
  };
}
