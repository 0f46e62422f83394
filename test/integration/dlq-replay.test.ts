/**
 * `npm run dlq -- list|replay` over dead letters archived in the lake: a replay
 * sends the original texts through the real collector again; what is valid now
 * (a client's clock was ahead when it sent) lands in events.raw, what is still
 * broken is rejected again with the same reason.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import type { DeadLetter } from '../../common/contract';
import { dayId, lakePaths } from '../../common/lake';
import { uploadFile } from '../../common/lake-io';
import { writeDlqParquet } from '../../batch-layer/lake-writer/parquet';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { isolatedConfig } from '../support/isolated';

const run = promisify(execFile);
const TSX = path.resolve('node_modules/.bin/tsx');
let cfg: Config;
let collector: Collector;
let base: string;
let env: NodeJS.ProcessEnv;
const now = Date.now();
const day = dayId(now);

const skewed = (i: number) => JSON.stringify({ event_id: `evt_skew_${i}`, event_type: 'page_view', user_id: `user_${i}`, timestamp: now - 60_000 });
const letters: DeadLetter[] = [
  // Sent ten minutes ago with a clock 9 minutes fast: in the future then, valid now.
  ...[0, 1, 2].map((i) => ({ reason: 'timestamp_out_of_range' as const, detail: 'ahead', received_at: now - 600_000, raw: skewed(i), index: i })),
  { reason: 'schema_violation', detail: 'event_type must be one of …', received_at: now - 500_000, raw: JSON.stringify({ event_id: 'evt_bad', event_type: 'video_rewind', user_id: 'u', timestamp: now - 60_000 }), index: 3 },
  { reason: 'malformed_json', detail: 'Unexpected end of JSON input', received_at: now - 400_000, raw: '{"event_id": "evt_cut", "event_ty', index: 0 },
];

beforeAll(async () => {
  cfg = await isolatedConfig('dlq', { COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0' });
  collector = buildCollector(cfg);
  base = (await collector.start()).replace('[::1]', '127.0.0.1');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dlq-test-'));
  const file = path.join(dir, 'dlq.parquet');
  await writeDlqParquet(letters.map((dead, i) => ({ dead, topic: cfg.kafka.dlqTopic, partition: 0, offset: String(i) })), file);
  await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.dlqObject(day, 0, '0', String(letters.length - 1)), file);
  fs.rmSync(dir, { recursive: true, force: true });
  env = { ...process.env, S3_BUCKET: cfg.s3.bucket, TOPIC_RAW: cfg.kafka.rawTopic, TOPIC_DLQ: cfg.kafka.dlqTopic };
});

afterAll(async () => {
  await collector?.stop();
});

it('lists dead letters by reason with a sample', async () => {
  const { stdout } = await run(TSX, ['ingestion/dlq/cli.ts', 'list', '--from', day, '--to', day], { env });
  expect(stdout).toMatch(/timestamp_out_of_range\s+3\n/);
  expect(stdout).toMatch(/schema_violation\s+1\n/);
  expect(stdout).toMatch(/malformed_json\s+1\n/);
  expect(stdout).toContain('evt_skew_0');
});

it('replays through the collector: now-valid events land in events.raw, broken ones are rejected again', async () => {
  const { stdout } = await run(TSX, ['ingestion/dlq/cli.ts', 'replay', '--from', day, '--url', base], { env });
  expect(stdout.trim()).toBe('replayed 5: accepted 3; rejected again: schema_violation 1, malformed_json 1');

  const consumer = kafkaClient(cfg).consumer({ groupId: `${cfg.kafka.speedGroup}-dlq-check` });
  await consumer.connect();
  await consumer.subscribe({ topic: cfg.kafka.rawTopic, fromBeginning: true });
  const ids = new Set<string>();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${[...ids]} arrived`)), 30_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          ids.add(JSON.parse(message.value!.toString()).event_id);
          if (ids.size === 3) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  expect([...ids].sort()).toEqual(['evt_skew_0', 'evt_skew_1', 'evt_skew_2']);
});

it('replays only the chosen reason, and says what a dry run would send', async () => {
  const { stdout } = await run(TSX, ['ingestion/dlq/cli.ts', 'replay', '--reason', 'schema_violation', '--dry-run', '--url', base], { env });
  expect(stdout.trim()).toBe(`1 dead letters would be replayed to ${base}`);
  await expect(run(TSX, ['ingestion/dlq/cli.ts', 'replay', '--reason', 'nope'], { env })).rejects.toThrow(/unknown reason "nope"/);
});
