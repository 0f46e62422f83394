/**
 * Day D's retention cohorts read every earlier day's user activity, so a day
 * may not publish before the earlier days that have data: running it out of
 * order fails with the days it waits for, and in order the cohorts are right.
 * And when late data changes who was active on an earlier day, its re-run marks
 * the later days dirty, so they are recomputed too.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { lakePaths } from '../../common/lake';
import { logger } from '../../common/log';
import { stageObjects, uploadFile } from '../../common/lake-io';
import { writeRawParquet } from '../../batch-layer/lake-writer/parquet';
import { MissingPreviousDaysError, hoursOfDay, jobContext, listDirty, runDaily, runHourly, type JobContext } from '../../batch-layer/jobs';
import { Duck } from '../../batch-layer/jobs/duck';
import { validateEvent, type EventRecord } from '../../common/contract';
import { isolatedConfig } from '../support/isolated';

const DAY1 = '2025-02-01';
const DAY2 = '2025-02-02';
let cfg: Config;
let ctx: JobContext;
let tmp: string;

function event(id: string, user: string, ts: number): EventRecord {
  // Records as a backfill would have accepted them: the fixed clock is far past these days, so no lateness horizon.
  const r = validateEvent({ event_id: id, event_type: 'page_view', user_id: user, timestamp: ts }, Date.parse('2026-01-01'), { latenessHorizonMs: Infinity });
  if (!r.ok) throw new Error(r.detail);
  return r.record;
}

beforeAll(async () => {
  cfg = await isolatedConfig('batchorder');
  ctx = jobContext(cfg, logger('test'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'order-'));
  // Users a and b arrive on day 1; on day 2 a comes back and c is new. One event every hour keeps every hour non-empty.
  let offset = 0;
  for (const day of [DAY1, DAY2]) {
    for (const hour of hoursOfDay(day)) {
      const t = Date.parse(`${hour}:10:00Z`);
      const users = day === DAY1 ? ['a', 'b'] : ['a', 'c'];
      const records = users.map((u) => event(`evt_${u}_${hour}`, u, t));
      const file = path.join(tmp, `${hour}.parquet`);
      const first = offset;
      await writeRawParquet(records.map((record) => ({ record, partition: 0, offset: String(offset++) })), file);
      await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 0, String(first), String(offset - 1)), file);
    }
  }
  for (const hour of [...hoursOfDay(DAY1), ...hoursOfDay(DAY2)]) await runHourly(ctx, hour);
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('refuses day 2 while day 1 (published hours, no daily run) waits, naming it', async () => {
  const err = await runDaily(ctx, DAY2, { shards: 1 }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(MissingPreviousDaysError);
  expect((err as MissingPreviousDaysError).days).toEqual([DAY1]);
});

async function cohorts(key: string): Promise<Record<string, unknown>[]> {
  const duck = await Duck.open();
  try {
    const [local] = await stageObjects(s3Client(cfg), cfg.s3.bucket, [key], fs.mkdtempSync(path.join(tmp, 'out-')));
    return await duck.json(`SELECT cohort_day::VARCHAR AS cohort_day, cohort_size::INTEGER AS size, retained_d1::INTEGER AS d1 FROM read_parquet('${local}') ORDER BY 1`);
  } finally {
    duck.close();
  }
}

it('in order, day 2 sees day 1 users as returning, not new', async () => {
  await runDaily(ctx, DAY1, { shards: 1 });
  const manifest = await runDaily(ctx, DAY2, { shards: 1 });
  expect(await cohorts(manifest.outputs.retention_cohorts)).toEqual([
    { cohort_day: DAY1, size: 2, d1: 1 }, // a and b; only a came back
    { cohort_day: DAY2, size: 1, d1: null }, // only c is new on day 2
  ]);
});

it('a re-run of day 1 that changes its users marks day 2 dirty; one that changes nothing does not', async () => {
  const dailyDirty = async () => (await listDirty(ctx)).filter((d) => d.kind === 'daily');
  await runDaily(ctx, DAY1, { shards: 2 });
  expect(await dailyDirty()).toEqual([]);

  // Late data: user c's first event was on day 1 after all, so c is no longer new on day 2.
  const hour = `${DAY1}T05`;
  const file = path.join(tmp, 'late.parquet');
  await writeRawParquet([{ record: event('evt_c_late', 'c', Date.parse(`${hour}:30:00Z`)), partition: 0, offset: '100000' }], file);
  await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 0, '100000', '100000'), file);
  await runHourly(ctx, hour);
  await runDaily(ctx, DAY1, { shards: 2 });
  const marked = await dailyDirty();
  expect(marked.map((d) => d.period)).toEqual([DAY2]);
  expect(marked[0].reason).toContain(DAY1);

  const manifest = await runDaily(ctx, DAY2, { shards: 2 });
  expect(await dailyDirty()).toEqual([]);
  expect(await cohorts(manifest.outputs.retention_cohorts)).toEqual([
    { cohort_day: DAY1, size: 3, d1: 2 }, // a, b and c; a and c came back
  ]);
});
