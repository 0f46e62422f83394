/**
 * Helpers of the tests that compare the published analytics with plain SQL over the simulator's
 * NDJSON (analytics, funnels): whole simulated days landed in the raw lake as the collector and the
 * lake writer would leave them, published by the real hourly and daily jobs, the independent
 * expectation (test/support/expected-sql.ts) over the same lines, and a serving layer over the lake.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { Redis } from 'ioredis';
import { redisClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths } from '../../common/lake';
import { logger } from '../../common/log';
import { hoursOfDay, jobContext, runDaily, runHourly } from '../../batch-layer/jobs';
import { Duck } from '../../batch-layer/jobs/duck';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { writeNdjson } from '../../ingestion/simulator/generate';
import { startServing, type Serving } from '../../serving-layer/service';
import { defineExpected } from '../support/expected-sql';
import { dropIsolated, isolatedConfig } from '../support/isolated';

const DAY = 86_400_000;
const READ = { 'x-api-key': 'dev-read-key' };

export interface DayWindow {
  start: number;
  /** The end of the last day (exclusive). */
  end: number;
  /** The days as YYYY-MM-DD, in order. */
  days: string[];
  /** The clock the lake is validated and the jobs run at: a day after the window, so every day is closed. */
  clock: number;
}

/** `n` whole UTC days from `start` (a midnight). */
export function dayWindow(start: number, n: number): DayWindow {
  const end = start + n * DAY;
  return { start, end, days: Array.from({ length: n }, (_, i) => new Date(start + i * DAY).toISOString().slice(0, 10)), clock: end + DAY };
}

export interface PublishedDays {
  cfg: Config;
  /** Scratch folder, removed by stop(). */
  tmp: string;
  /** DuckDB holding the independent expectation's tables (`lines`, `exp_events`…). */
  duck: Duck;
  serving: Serving;
  /** GET on the serving layer with the read key. */
  get(pathAndQuery: string): Promise<{ status: number; body: any }>;
  /** Stops the serving layer and removes what the set-up wrote (bucket, Redis prefix, scratch folder). */
  stop(): Promise<void>;
}

/**
 * The simulator's sends over `window` (plus `extraLines`, sent after them) in an isolated bucket's
 * raw lake, every hour and day of it published by the real jobs, the same lines defined as the
 * expectation in DuckDB, and a serving layer on a free port. Settings as `overrides`.
 */
export async function publishSimulatedDays(
  label: string,
  window: DayWindow,
  opts: { seed: number; users: number; extraLines?: string[]; overrides?: Record<string, string> },
): Promise<PublishedDays> {
  let cfg: Config | undefined;
  let tmp: string | undefined;
  let duck: Duck | undefined;
  let serving: Serving | undefined;
  let redis: Redis | undefined;
  const stop = async () => {
    await serving?.stop();
    duck?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    if (cfg && redis) await dropIsolated(cfg, redis);
    redis?.disconnect();
  };
  try {
    cfg = await isolatedConfig(label, { BATCH_SHARDS: '2', SERVING_SYNC_INTERVAL_MS: '600000', ...opts.overrides });
    const ctx = jobContext(cfg, logger(`${label}-test`));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${label}-it-`));
    const ndjson = path.join(tmp, 'sends.ndjson');
    await writeNdjson(ndjson, { seed: opts.seed, users: opts.users, startMs: window.start, endMs: window.end, duplicateFraction: 0.03, invalidFraction: 0.02 });
    if (opts.extraLines) fs.appendFileSync(ndjson, opts.extraLines.join('\n') + '\n');
    const lines = fs.readFileSync(ndjson, 'utf8').split('\n').filter((l) => l !== '');
    await writeLake(cfg, tmp, window, lines);
    for (const day of window.days) {
      for (const hour of hoursOfDay(day)) await runHourly(ctx, hour, { now: window.clock });
      await runDaily(ctx, day, { now: window.clock });
    }
    duck = await Duck.open({ threads: 1 });
    await defineExpected(duck, ndjson, window.clock);
    redis = redisClient(cfg);
    serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  } catch (err) {
    await stop();
    throw err;
  }
  const url = serving.url;
  return {
    cfg,
    tmp,
    duck,
    serving,
    async get(pathAndQuery) {
      const res = await fetch(`${url}${pathAndQuery}`, { headers: READ });
      return { status: res.status, body: await res.json() };
    },
    stop,
  };
}

/** What the collector + lake writer would put in the lake: every valid line, one partition, offsets in send order. */
async function writeLake(cfg: Config, tmp: string, window: DayWindow, lines: string[]): Promise<void> {
  const byHour = new Map<string, RawRow[]>();
  let offset = 0;
  for (const [i, line] of lines.entries()) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      continue;
    }
    // The window is older than the lateness horizon: the lake is loaded as an operator's backfill would.
    const v = validateEvent(parsed, window.clock, { latenessHorizonMs: Number.POSITIVE_INFINITY });
    if (!v.ok) continue;
    const record: EventRecord = { ...v.record, received_at: window.start + i };
    const hour = hourId(record.ts);
    byHour.set(hour, [...(byHour.get(hour) ?? []), { record, partition: 0, offset: String(offset++) }]);
  }
  const s3 = s3Client(cfg);
  for (const [hour, rows] of byHour) {
    const file = path.join(tmp, `${hour}.parquet`);
    await writeRawParquet(rows, file);
    const key = lakePaths.rawObject(hour, 0, rows[0].offset, rows[rows.length - 1].offset);
    await s3.send(new PutObjectCommand({ Bucket: cfg.s3.bucket, Key: key, Body: fs.readFileSync(file) }));
  }
}
