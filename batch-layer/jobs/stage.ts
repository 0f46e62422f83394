/** Staging lake objects into a scratch dir and proving DuckDB can read them, naming the object that it cannot. */
import type { LakeObject } from '../../common/lake-io';
import { stageObjects, uploadFile } from '../../common/lake-io';
import { checkpoint, mapLimit, type JobContext } from './context';
import { Duck, sqlString } from './duck';
import { CorruptObjectError } from './errors';

export interface StagedObject {
  key: string;
  etag: string;
  size: number;
  file: string;
}

export async function stage(ctx: JobContext, objects: readonly LakeObject[] | readonly { key: string; etag: string; size: number }[], dir: string, step: string): Promise<StagedObject[]> {
  if (objects.length === 0) return [];
  const files = await stageObjects(ctx.s3, ctx.bucket, objects.map((o) => o.key), dir, {
    concurrency: ctx.cfg.batch.ioConcurrency,
    onProgress: (done, total) => checkpoint(ctx, { step, staged: done, total }),
  });
  return objects.map((o, i) => ({ key: o.key, etag: o.etag, size: o.size, file: files[i] }));
}

/**
 * Reads each staged file's Parquet footer, so a truncated or foreign object fails
 * the job naming its key instead of somewhere inside a multi-file scan.
 */
export async function verifyParquet(duck: Duck, staged: readonly StagedObject[]): Promise<void> {
  for (const s of staged) {
    try {
      await duck.run(`SELECT count(*) FROM read_parquet(${sqlString(s.file)})`);
    } catch (err) {
      throw new CorruptObjectError(s.key, firstLine(err));
    }
  }
}

/**
 * Runs a statement that scans staged objects; when DuckDB fails on corrupt data
 * past the footer, finds which object is to blame and says so.
 */
export async function blameCorrupt<T>(duck: Duck, staged: readonly StagedObject[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const message = firstLine(err);
    const named = staged.find((s) => message.includes(s.file));
    if (named) throw new CorruptObjectError(named.key, message);
    for (const s of staged) {
      try {
        await duck.run(`CREATE OR REPLACE TEMP TABLE __probe AS SELECT * FROM read_parquet(${sqlString(s.file)})`);
      } catch (probeErr) {
        throw new CorruptObjectError(s.key, firstLine(probeErr));
      } finally {
        await duck.run('DROP TABLE IF EXISTS __probe');
      }
    }
    throw err;
  }
}

export function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0];
}

/** Uploads local files to their keys in parallel, heartbeating per object. */
export async function uploadAll(ctx: JobContext, files: readonly { key: string; file: string }[], step: string): Promise<void> {
  let done = 0;
  await mapLimit(files, ctx.cfg.batch.ioConcurrency, async (f) => {
    await uploadFile(ctx.s3, ctx.bucket, f.key, f.file);
    done += 1;
    checkpoint(ctx, { step, uploaded: done, total: files.length });
  });
}
