/**
 * Compaction: merge an hour's small raw objects into few large ones.
 *
 * Safe at every point of a crash because the batch layer de-duplicates raw rows:
 *   1. the merged objects are written under keys derived from the digest of the
 *      objects they replace (a retry rewrites the same keys, same bytes);
 *   2. the compaction manifest records inputs and outputs;
 *   3. only then are the inputs deleted (a later run finishes that step).
 * Between 1 and 3 every row exists twice with the same Kafka position, which the
 * hourly job counts once (and not as a duplicate).
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { lakePaths } from '../../common/lake';
import { deleteObjects, getJson, listObjects, putJson, withScratchDir } from '../../common/lake-io';
import { checkpoint, type JobContext } from './context';
import { Duck, parquetColumns, rawColumnsSelect, sqlList } from './duck';
import { NonRetryableBatchError } from './errors';
import { parsePeriod } from './context';
import { stage, uploadAll, verifyParquet } from './stage';

export interface CompactionRecord {
  digest: string;
  compactedAt: string;
  rows: number;
  inputs: { key: string; etag: string; size: number }[];
  outputs: string[];
}

export interface CompactionManifest {
  hour: string;
  compactions: CompactionRecord[];
}

export interface CompactionResult {
  hour: string;
  /** False when there was nothing (or one object) to merge. */
  compacted: boolean;
  inputs: number;
  outputs: string[];
  rows: number;
  /** Inputs of an earlier, interrupted compaction removed by this run. */
  recovered: number;
}

function isCompacted(key: string): boolean {
  return path.posix.basename(key).startsWith('c-');
}

export async function compactHour(ctx: JobContext, hour: string, opts: { targetBytes?: number; now?: number } = {}): Promise<CompactionResult> {
  parsePeriod('hourly', hour, opts.now);
  const targetBytes = opts.targetBytes ?? ctx.cfg.batch.compactTargetBytes;
  if (!(targetBytes > 0)) throw new NonRetryableBatchError(`targetBytes must be > 0, got ${targetBytes}`);
  const s3 = ctx.s3;
  const bucket = ctx.bucket;
  const log = ctx.log.child({ job: 'compaction', hour });
  const manifestKey = lakePaths.compactionManifest(hour);
  const manifest = (await getJson<CompactionManifest>(s3, bucket, manifestKey)) ?? { hour, compactions: [] };

  let objects = (await listObjects(s3, bucket, lakePaths.rawHourPrefix(hour))).filter((o) => o.key.endsWith('.parquet'));
  // Finish a compaction that crashed after recording its outputs: its inputs may still be there.
  const present = new Set(objects.map((o) => o.key));
  const leftovers = manifest.compactions.flatMap((c) => c.inputs.map((i) => i.key)).filter((k) => present.has(k));
  if (leftovers.length > 0) {
    await deleteObjects(s3, bucket, leftovers);
    log.info({ objects: leftovers.length }, 'removed inputs of an interrupted compaction');
    const gone = new Set(leftovers);
    objects = objects.filter((o) => !gone.has(o.key));
  }

  const candidates = objects.filter((o) => !isCompacted(o.key) && o.size < targetBytes).sort((a, b) => a.key.localeCompare(b.key));
  if (candidates.length < 2) return { hour, compacted: false, inputs: 0, outputs: [], rows: 0, recovered: leftovers.length };
  const digest = createHash('sha256')
    .update(candidates.map((o) => `${o.key}\t${o.etag}`).join('\n'))
    .digest('hex')
    .slice(0, 16);
  const totalBytes = candidates.reduce((n, o) => n + o.size, 0);
  const parts = Math.max(1, Math.ceil(totalBytes / targetBytes));

  const { outputs, rows } = await withScratchDir(ctx.cfg, async (dir) => {
    const staged = await stage(ctx, candidates, path.join(dir, 'in'), 'stage');
    const duck = await Duck.open({ threads: ctx.cfg.batch.duckdbThreads, tempDir: path.join(dir, 'duck'), signal: ctx.signal });
    try {
      await verifyParquet(duck, staged);
      // Kafka order, so a merged object reads like the log it came from; raw rows are kept as received.
      await duck.run(
        `CREATE TABLE merged AS
         SELECT *, row_number() OVER (ORDER BY kafka_partition, kafka_offset, event_id, received_at) - 1 AS __rn
         FROM (SELECT ${rawColumnsSelect(await parquetColumns(duck, staged.map((s) => s.file)))} FROM read_parquet(${sqlList(staged.map((s) => s.file))}, union_by_name = true))`,
      );
      const rows = await duck.scalar('SELECT count(*) FROM merged');
      const perPart = Math.ceil(rows / parts);
      const uploads: { key: string; file: string }[] = [];
      for (let i = 0; i < parts; i++) {
        const file = path.join(dir, 'out', `${i}.parquet`);
        await duck.run(`CREATE OR REPLACE TABLE part AS SELECT * EXCLUDE (__rn) FROM merged WHERE __rn >= ${i * perPart} AND __rn < ${(i + 1) * perPart} ORDER BY __rn`);
        await duck.writeParquet('part', file);
        uploads.push({ key: lakePaths.compactedObject(hour, digest, i), file });
      }
      await uploadAll(ctx, uploads, 'upload');
      return { outputs: uploads.map((u) => u.key), rows };
    } finally {
      duck.close();
    }
  });
  checkpoint(ctx, { step: 'record', outputs: outputs.length });

  const record: CompactionRecord = {
    digest,
    compactedAt: new Date().toISOString(),
    rows,
    inputs: candidates.map((o) => ({ key: o.key, etag: o.etag, size: o.size })),
    outputs,
  };
  manifest.compactions = [...manifest.compactions.filter((c) => c.digest !== digest), record];
  await putJson(s3, bucket, manifestKey, manifest);
  await deleteObjects(s3, bucket, candidates.map((o) => o.key));
  log.info({ inputs: candidates.length, outputs: outputs.length, rows, bytes: totalBytes }, 'hour compacted');
  return { hour, compacted: true, inputs: candidates.length, outputs, rows, recovered: leftovers.length };
}
