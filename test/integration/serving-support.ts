/**
 * A dataset both layers hold, for the serving tests: simulated events written
 * to the isolated raw lake as Parquet (as the lake writer would) and published
 * by the real batch jobs, and the same events produced to the isolated Kafka
 * topic for the real speed layer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths } from '../../common/lake';
import { writeRawParquet } from '../../batch-layer/lake-writer/parquet';
import { runHourly, type JobContext } from '../../batch-layer/jobs';
import { simulate } from '../../ingestion/simulator/generate';

export interface LambdaFixture {
  /** As sent (duplicates included), ordered by event time. */
  all: EventRecord[];
  /** De-duplicated by event_id (first wins): what exact metrics count. */
  distinct: EventRecord[];
  /** Writes the hour's raw object and runs the real hourly job over it. */
  publishHour(hour: string): Promise<void>;
}

export function lambdaFixture(cfg: Config, ctx: JobContext, tmp: string, opts: { seed: number; users: number; startMs: number; endMs: number; now: number }): LambdaFixture {
  const all: EventRecord[] = [];
  for (const send of simulate({ seed: opts.seed, users: opts.users, startMs: opts.startMs, endMs: opts.endMs, duplicateFraction: 0.03 })) {
    if (send.kind === 'invalid') continue;
    const v = validateEvent(JSON.parse(send.line), opts.now);
    if (v.ok) all.push({ ...v.record, received_at: send.sendAt });
  }
  // One partition's worth of offsets in event-time order, so each hour's rows are one contiguous offset range.
  all.sort((a, b) => a.ts - b.ts || (a.event_id < b.event_id ? -1 : 1));
  const seen = new Set<string>();
  const distinct = all.filter((r) => (seen.has(r.event_id) ? false : (seen.add(r.event_id), true)));
  return {
    all,
    distinct,
    async publishHour(hour) {
      const offset = all.findIndex((r) => hourId(r.ts) === hour);
      const rows = all.filter((r) => hourId(r.ts) === hour);
      if (rows.length > 0) {
        const file = path.join(tmp, `${hour}.parquet`);
        await writeRawParquet(
          rows.map((record, i) => ({ record, partition: 0, offset: String(offset + i) })),
          file,
        );
        const key = lakePaths.rawObject(hour, 0, String(offset), String(offset + rows.length - 1));
        await s3Client(cfg).send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: fs.readFileSync(file) }));
      }
      await runHourly(ctx, hour);
    },
  };
}
