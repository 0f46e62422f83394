/** The S3 helpers of the batch layer against MinIO. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { copyObject, deleteObjects, getJson, listObjects, putJson, stageObjects, uploadFile, withScratchDir } from '../../common/lake-io';
import { isolatedConfig } from '../support/isolated';

let cfg: Config;
beforeAll(async () => {
  cfg = await isolatedConfig('lakeio');
});

describe('lake-io', () => {
  it('lists every page, stages objects atomically under their key paths, deletes in batches', async () => {
    const s3 = s3Client(cfg);
    const keys = Array.from({ length: 1005 }, (_, i) => `many/dt=2024-05-01/obj-${String(i).padStart(4, '0')}.txt`);
    for (let i = 0; i < keys.length; i += 100) {
      await Promise.all(keys.slice(i, i + 100).map((Key) => s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key, Body: Key }))));
    }
    const listed = await listObjects(s3, cfg.s3.bucket, 'many/');
    expect(listed.map((o) => o.key)).toEqual(keys);
    expect(listed[0]).toMatchObject({ size: keys[0].length });
    expect(listed[0].etag).toMatch(/^[0-9a-f]{32}$/);

    await withScratchDir(cfg, async (dir) => {
      const progress: number[] = [];
      const files = await stageObjects(s3, cfg.s3.bucket, keys.slice(0, 20), dir, { concurrency: 4, onProgress: (done) => progress.push(done) });
      expect(files[3]).toBe(path.join(dir, keys[3]));
      expect(await fs.readFile(files[3], 'utf8')).toBe(keys[3]);
      expect(progress).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      const leftovers = (await fs.readdir(path.dirname(files[0]))).filter((f) => f.endsWith('.part'));
      expect(leftovers).toEqual([]);
    });

    await deleteObjects(s3, cfg.s3.bucket, keys);
    expect(await listObjects(s3, cfg.s3.bucket, 'many/')).toEqual([]);
  });

  it('names the key of an object it cannot stage', async () => {
    const s3 = s3Client(cfg);
    await withScratchDir(cfg, async (dir) => {
      await expect(stageObjects(s3, cfg.s3.bucket, ['raw/events/dt=2024-05-01/hour=00/missing.parquet'], dir)).rejects.toThrow(
        /raw\/events\/dt=2024-05-01\/hour=00\/missing\.parquet: no such object/,
      );
    });
  });

  it('uploads small files with one PUT and large ones as multipart', async () => {
    const s3 = s3Client(cfg);
    await withScratchDir(cfg, async (dir) => {
      const small = path.join(dir, 'small.bin');
      const large = path.join(dir, 'large.bin');
      await fs.writeFile(small, randomBytes(1024));
      await fs.writeFile(large, randomBytes(17 * 1024 * 1024));
      const smallTag = await uploadFile(s3, cfg.s3.bucket, 'up/small.bin', small);
      const largeTag = await uploadFile(s3, cfg.s3.bucket, 'up/large.bin', large, { partSize: 5 * 1024 * 1024 });
      expect(smallTag).toMatch(/^[0-9a-f]{32}$/);
      expect(largeTag).toMatch(/^[0-9a-f]{32}-4$/); // 4 parts of ≤5 MiB
      const back = await stageObjects(s3, cfg.s3.bucket, ['up/large.bin'], path.join(dir, 'back'));
      expect((await fs.readFile(back[0])).equals(await fs.readFile(large))).toBe(true);
    });
  });

  it('puts and gets JSON (null when missing) and copies objects', async () => {
    const s3 = s3Client(cfg);
    expect(await getJson(s3, cfg.s3.bucket, '_manifests/none.json')).toBeNull();
    await putJson(s3, cfg.s3.bucket, '_manifests/a b.json', { x: 1 });
    await copyObject(s3, cfg.s3.bucket, '_manifests/a b.json', '_manifests/c.json');
    expect(await getJson(s3, cfg.s3.bucket, '_manifests/c.json')).toEqual({ x: 1 });
  });

  it('removes the scratch dir even when the work fails', async () => {
    let seen = '';
    await expect(
      withScratchDir(cfg, async (dir) => {
        seen = dir;
        await fs.writeFile(path.join(dir, 'x'), 'x');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(fs.access(seen)).rejects.toThrow();
  });
});
