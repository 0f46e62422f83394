/**
 * The processed/events of published days, for ad-hoc funnels: each day's 24 hourly manifests name
 * the one current run of each hour (as the daily job reads them), whose objects are staged under
 * the serving data dir for one query and removed after it. A day whose processed events retention
 * removed is a 400: only its declared funnels' tables remain.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../../common/config';
import { lakePaths, type RawRetentionRecord, type RunManifest } from '../../common/lake';
import { getJson, stageObjects } from '../../common/lake-io';
import { MergeError } from '../merge';
import type { FunnelEvents } from './funnel';

const hoursOf = (day: string) => Array.from({ length: 24 }, (_, h) => `${day}T${String(h).padStart(2, '0')}`);

export function lakeFunnelEvents(cfg: Config, s3: S3Client): FunnelEvents {
  return {
    async withDays(days, fn) {
      const removed = await Promise.all(days.map((d) => getJson<RawRetentionRecord>(s3, cfg.s3.bucket, lakePaths.processedRetention(d))));
      const gone = days.filter((_, i) => removed[i] !== null);
      if (gone.length > 0) {
        throw new MergeError('from', `processed retention removed the events of ${gone.join(', ')}: an ad-hoc funnel cannot be computed there (declare it in FUNNELS to keep it daily)`);
      }
      const hours = days.flatMap(hoursOf);
      const manifests = await Promise.all(hours.map((h) => getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('hourly', h))));
      const keys = manifests.map((m) => m?.outputs.events).filter((k): k is string => k !== undefined);
      const dir = path.join(cfg.serving.dataDir, `funnel-${process.pid}-${randomBytes(4).toString('hex')}`);
      try {
        return await fn(await stageObjects(s3, cfg.s3.bucket, keys, dir, { concurrency: 8 }));
      } finally {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    },
  };
}
