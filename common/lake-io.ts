/**
 * S3 helpers every reader and writer of the lake uses (lake writer, batch jobs,
 * serving sync, lake CLI, DLQ tool). DuckDB's httpfs cannot be downloaded
 * on these machines, so lake objects are staged to local files through the AWS
 * SDK, read with read_parquet, and results are written locally and uploaded.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Config } from './config';
import { lakePaths, type DirtyMarker } from './lake';

export interface LakeObject {
  key: string;
  /** Without the surrounding quotes S3 puts around it. */
  etag: string;
  size: number;
  lastModified: Date;
}

export class LakeIoError extends Error {
  override name = 'LakeIoError';
  constructor(
    message: string,
    readonly key?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

function stripQuotes(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

/** Every object under `prefix` (all pages), in key order. */
export async function listObjects(s3: S3Client, bucket: string, prefix: string): Promise<LakeObject[]> {
  const out: LakeObject[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) {
      if (!o.Key) continue;
      out.push({ key: o.Key, etag: stripQuotes(o.ETag), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

export interface StageOptions {
  /** Parallel downloads (default 8). */
  concurrency?: number;
  /** Called after each finished object with (done, total, key). */
  onProgress?: (done: number, total: number, key: string) => void;
}

/**
 * Download `keys` into `dir`, keeping their key paths below it (so Hive-style
 * `dt=…/hour=…` folders survive for read_parquet(hive_partitioning = true)).
 * Each file is written under a temporary name and renamed, so a reader never
 * sees half a file. Returns the local paths in the order of `keys`.
 */
export async function stageObjects(
  s3: S3Client,
  bucket: string,
  keys: readonly string[],
  dir: string,
  opts: StageOptions = {},
): Promise<string[]> {
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  const local = keys.map((key) => {
    const file = path.resolve(dir, key);
    if (!file.startsWith(path.resolve(dir) + path.sep)) throw new LakeIoError(`object key escapes the staging dir: ${key}`, key);
    return file;
  });
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length) {
      const i = next++;
      await downloadTo(s3, bucket, keys[i], local[i]);
      done += 1;
      opts.onProgress?.(done, keys.length, keys[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
  return local;
}

async function downloadTo(s3: S3Client, bucket: string, key: string, file: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${randomBytes(4).toString('hex')}.part`;
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!res.Body) throw new Error('empty body');
    await pipeline(res.Body as Readable, fs.createWriteStream(tmp));
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    const why = isNotFound(err) ? 'no such object' : (err as Error).message;
    throw new LakeIoError(`cannot stage s3://${bucket}/${key}: ${why}`, key, { cause: err });
  }
}

/** Files at or above this size go up as multipart uploads. */
export const MULTIPART_THRESHOLD = 16 * 1024 * 1024;

export interface UploadOptions {
  /** Multipart part size in bytes (default 8 MiB, S3's minimum is 5 MiB). */
  partSize?: number;
  /** Parallel parts of one multipart upload (default 4). */
  queueSize?: number;
  contentType?: string;
}

/** Upload a local file; returns the ETag. Large files go multipart so a 128 MB object never sits in memory. */
export async function uploadFile(s3: S3Client, bucket: string, key: string, file: string, opts: UploadOptions = {}): Promise<string> {
  const { size } = await fsp.stat(file);
  const partSize = Math.max(5 * 1024 * 1024, opts.partSize ?? 8 * 1024 * 1024);
  const contentType = opts.contentType ?? (key.endsWith('.parquet') ? 'application/vnd.apache.parquet' : 'application/octet-stream');
  try {
    if (size < Math.max(MULTIPART_THRESHOLD, partSize)) {
      const body = await fsp.readFile(file);
      const res = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }));
      return stripQuotes(res.ETag);
    }
    const upload = new Upload({
      client: s3,
      params: { Bucket: bucket, Key: key, Body: fs.createReadStream(file), ContentType: contentType },
      partSize,
      queueSize: opts.queueSize ?? 4,
      // A failed multipart upload must not leave orphaned parts behind.
      leavePartsOnError: false,
    });
    const res = await upload.done();
    return stripQuotes(res.ETag);
  } catch (err) {
    throw new LakeIoError(`cannot upload ${file} to s3://${bucket}/${key}: ${(err as Error).message}`, key, { cause: err });
  }
}

export async function putJson(s3: S3Client, bucket: string, key: string, value: unknown): Promise<string> {
  const res = await s3.send(
    new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(value, null, 2), ContentType: 'application/json' }),
  );
  return stripQuotes(res.ETag);
}

/** A conditional request lost: the object changed (412) or another conditional write was in flight (409). */
function isPreconditionFailed(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  return status === 412 || status === 409 || e?.name === 'PreconditionFailed' || e?.name === 'ConditionalRequestConflict';
}

/**
 * Writes `value` only if the object is still the version the caller read
 * (`ifMatch`: its ETag) or does not exist yet (`ifNoneMatch: '*'`). Returns the
 * new ETag, or null when the condition failed (someone else wrote first).
 */
export async function putJsonIf(
  s3: S3Client,
  bucket: string,
  key: string,
  value: unknown,
  cond: { ifMatch: string } | { ifNoneMatch: '*' },
): Promise<string | null> {
  try {
    const res = await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: JSON.stringify(value, null, 2),
        ContentType: 'application/json',
        ...('ifMatch' in cond ? { IfMatch: `"${cond.ifMatch}"` } : { IfNoneMatch: '*' }),
      }),
    );
    return stripQuotes(res.ETag);
  } catch (err) {
    if (isPreconditionFailed(err)) return null;
    // Some S3 implementations answer If-Match on a missing object with 404.
    if ('ifMatch' in cond && isNotFound(err)) return null;
    throw err;
  }
}

/**
 * Writes (or overwrites) the period's dirty marker: a run that started after
 * `markedAt` clears it. Deliberately unconditional: late data always wins, and
 * a clear that judged the previous version fails its If-Match (see clearDirtyMarker).
 */
export async function putDirtyMarker(s3: S3Client, bucket: string, marker: DirtyMarker): Promise<void> {
  const { clearedAt: _c, clearedBy: _b, ...open } = marker;
  await putJson(s3, bucket, lakePaths.dirtyMarker(marker.kind, marker.period), open);
}

export type ClearOutcome = 'absent' | 'cleared' | 'kept';

/**
 * Clears a period's dirty marker if it was written before `startedAtMs` (the run
 * saw that late data). S3 has no conditional delete, so the marker is replaced
 * by a tombstone with If-Match on the ETag that was judged: a marker written in
 * between has another ETag, the write fails, and the newer marker is judged again.
 */
export async function clearDirtyMarker(
  s3: S3Client,
  bucket: string,
  kind: DirtyMarker['kind'],
  period: string,
  startedAtMs: number,
  clearedBy: string,
): Promise<{ outcome: ClearOutcome; marker: DirtyMarker | null }> {
  const key = lakePaths.dirtyMarker(kind, period);
  for (let attempt = 0; attempt < 10; attempt++) {
    const got = await getJsonWithEtag<DirtyMarker>(s3, bucket, key);
    if (!got || got.value.clearedAt !== undefined) return { outcome: 'absent', marker: null };
    if (got.value.markedAt >= startedAtMs) return { outcome: 'kept', marker: got.value };
    const tombstone: DirtyMarker = { ...got.value, clearedAt: Date.now(), clearedBy };
    if ((await putJsonIf(s3, bucket, key, tombstone, { ifMatch: got.etag })) !== null) return { outcome: 'cleared', marker: got.value };
  }
  throw new LakeIoError(`cannot clear the dirty marker ${key}: it kept changing under 10 attempts`, key);
}

/** An open (not cleared) dirty marker. */
export function isOpenMarker(m: DirtyMarker | null | undefined): m is DirtyMarker {
  return !!m && m.clearedAt === undefined;
}

/** The parsed object, or null when it does not exist. */
export async function getJson<T>(s3: S3Client, bucket: string, key: string): Promise<T | null> {
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const text = await res.Body!.transformToString('utf8');
    return JSON.parse(text) as T;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** The parsed object with its ETag (unquoted), or null when it does not exist. */
export async function getJsonWithEtag<T>(s3: S3Client, bucket: string, key: string): Promise<{ value: T; etag: string } | null> {
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const text = await res.Body!.transformToString('utf8');
    return { value: JSON.parse(text) as T, etag: stripQuotes(res.ETag) };
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export async function copyObject(s3: S3Client, bucket: string, fromKey: string, toKey: string): Promise<void> {
  await s3.send(
    new CopyObjectCommand({ Bucket: bucket, Key: toKey, CopySource: `${bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}` }),
  );
}

/** Delete keys in batches of 1000 (the DeleteObjects limit); throws naming the keys S3 refused. */
export async function deleteObjects(s3: S3Client, bucket: string, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    const res = await s3.send(
      new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
    );
    if (res.Errors && res.Errors.length > 0) {
      const first = res.Errors[0];
      throw new LakeIoError(
        `cannot delete ${res.Errors.length} object(s), first s3://${bucket}/${first.Key}: ${first.Code} ${first.Message ?? ''}`.trim(),
        first.Key,
      );
    }
  }
}

/** Run `fn` with a fresh directory under cfg.batch.scratchDir, removed afterwards whatever happens. */
export async function withScratchDir<T>(cfg: Config, fn: (dir: string) => Promise<T>): Promise<T> {
  await fsp.mkdir(cfg.batch.scratchDir, { recursive: true });
  const dir = await fsp.mkdtemp(path.join(cfg.batch.scratchDir, 'run-'));
  try {
    return await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
