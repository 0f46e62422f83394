/**
 * `npm run import` on real MinIO: an NDJSON file (the simulator's sends: valid, late, duplicate
 * and invalid lines, plus copies of events the lake already holds) and a CSV file (new events,
 * invalid rows, copies of both) go into a lake that already holds part of the history. The import
 * is SIGKILLed after its first object and run again; then `--backfill` recomputes its days on a real
 * Temporal worker and every exact view must equal the independent SQL over the valid, de-duplicated rows
 * (test/support/expected-sql.ts). The DLQ zone must hold every invalid row once, with its reason,
 * and no event may be written twice.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type DlqReason, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type RunManifest } from '../../common/lake';
import { deleteObjects, getJson, listObjects, stageObjects, uploadFile } from '../../common/lake-io';
import { writeRawParquet, type RawRow } from '../../batch-layer/lake-writer/parquet';
import { hoursOfDay, jobContext, listDirty, type JobContext } from '../../batch-layer/jobs';
import { Duck, sqlList } from '../../batch-layer/jobs/duck';
import { logger } from '../../common/log';
import { pseudonymiser } from '../../ingestion/collector/pseudonymise';
import { simulate, type SimulatedSend } from '../../ingestion/simulator/generate';
import type { ImportState } from '../../ingestion/import/import';
import { importIdOf, listInputs } from '../../ingestion/import/read';
import { defineExpected, expectedSql } from '../support/expected-sql';
import { buildWorkflowBundle } from '../../workflows/service';
import { isolatedConfig } from '../support/isolated';
import { spawnMain } from '../support/spawn-main';
import { quietTemporalRuntime } from '../support/temporal';
import { orchestrationOverrides, startOrchestration, type Orchestration } from './workflow-support';

const run = promisify(execFile);
const TSX = path.resolve('node_modules/.bin/tsx');
const DAYS = ['2025-02-10', '2025-02-11'];
const HOURS = DAYS.flatMap(hoursOfDay);
const START = Date.parse(`${DAYS[0]}T00:00:00Z`);
const END = Date.parse('2025-02-12T00:00:00Z');
/** The clock of the "not more than 5 minutes in the future" rule: the import's, give or take the test's length. */
const CLOCK = Date.now();

let cfg: Config;
let ctx: JobContext;
let tmp: string;
let inputDir: string;
let env: NodeJS.ProcessEnv;
let duck: Duck;
let orchestration: Orchestration | undefined;
let client: Client;
/** What went into the lake before the import (valid sends of the first quarter). */
const lakeLines: string[] = [];
const ndjsonLines: string[] = [];
/** Each invalid row of the inputs: its reason and the original text a dead letter must carry. */
const invalid: { reason: DlqReason; raw: string }[] = [];
/** The valid CSV rows as the JSON events they stand for (for the expected SQL). */
const csvEvents: string[] = [];
let csvRows = 0;

function csvOf(values: Record<string, string | number | undefined>, header: readonly string[]): string {
  return header.map((h) => (values[h] === undefined ? '' : String(values[h]))).join(',');
}

/** A valid event from a send's JSON line, flattened to the CSV's columns. */
function flat(line: string): Record<string, string | number | undefined> {
  const ev = JSON.parse(line) as { properties?: Record<string, unknown>; context?: Record<string, unknown> } & Record<string, unknown>;
  const p = ev.properties ?? {};
  const c = ev.context ?? {};
  return {
    event_id: ev.event_id as string,
    event_type: ev.event_type as string,
    user_id: ev.user_id as string,
    session_id: (ev.session_id as string | undefined) ?? undefined,
    timestamp: ev.timestamp as number,
    device_type: p.device_type as string | undefined,
    content_id: p.content_id as string | undefined,
    page: p.page as string | undefined,
    location: c.location as string | undefined,
    app_version: c.app_version as string | undefined,
    ip_address: c.ip_address as string | undefined,
  };
}

function jsonOf(row: Record<string, string | number | undefined>): string {
  const properties = Object.fromEntries(['device_type', 'content_id', 'page'].filter((k) => row[k] !== undefined).map((k) => [k, row[k]]));
  const context = Object.fromEntries(['location', 'app_version', 'ip_address'].filter((k) => row[k] !== undefined).map((k) => [k, row[k]]));
  const { event_id, event_type, user_id, session_id, timestamp } = row;
  return JSON.stringify({ event_id, event_type, user_id, ...(session_id === undefined ? {} : { session_id }), timestamp, properties, context });
}

beforeAll(async () => {
  quietTemporalRuntime();
  cfg = await isolatedConfig('import', orchestrationOverrides('import'));
  ctx = jobContext(cfg, logger('import-test'));
  const bundle = buildWorkflowBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'import-it-'));
  inputDir = path.join(tmp, 'input');
  fs.mkdirSync(inputDir);
  env = {
    ...process.env,
    S3_BUCKET: cfg.s3.bucket,
    TEMPORAL_TASK_QUEUE: cfg.temporal.taskQueue,
    TEMPORAL_WORKFLOW_ID_PREFIX: cfg.orchestration.workflowIdPrefix,
    IMPORT_CHUNK_ROWS: '25',
    LOG_LEVEL: 'warn',
  };

  const sends: SimulatedSend[] = [...simulate({ seed: 15, users: 12, startMs: START, endMs: END, lateFraction: 0.02, duplicateFraction: 0.06, invalidFraction: 0.05 })];
  const cut = Math.floor(sends.length / 4);
  // The lake already holds the first quarter's valid sends, as the lake writer would have written them.
  const rows: RawRow[] = [];
  for (const send of sends.slice(0, cut)) {
    if (send.kind === 'invalid') continue;
    const v = validateEvent(JSON.parse(send.line), CLOCK, { latenessHorizonMs: Infinity });
    if (!v.ok) throw new Error(`simulated valid send rejected: ${v.detail}`);
    const record: EventRecord = pseudonymiser(cfg).record({ ...v.record, received_at: send.sendAt });
    rows.push({ record, partition: 0, offset: String(rows.length) });
    lakeLines.push(send.line);
  }
  const byHour = new Map<string, RawRow[]>();
  for (const r of rows) byHour.set(hourId(r.record.ts), [...(byHour.get(hourId(r.record.ts)) ?? []), r]);
  for (const [hour, group] of byHour) {
    const file = path.join(tmp, 'lake', `${hour}.parquet`);
    await writeRawParquet(group, file);
    await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 0, group[0].offset, group[group.length - 1].offset), file);
  }

  // NDJSON: the other three quarters as sent, and five more copies of events the lake holds.
  const valid = sends.slice(cut).filter((s) => s.kind !== 'invalid');
  for (const send of sends.slice(cut)) {
    ndjsonLines.push(send.line);
    if (send.kind === 'invalid') invalid.push({ reason: send.expectedReason!, raw: send.line });
  }
  for (let i = 0; i < 5; i++) ndjsonLines.push(lakeLines[i * 7]);
  fs.writeFileSync(path.join(inputDir, 'a-events.ndjson'), `${ndjsonLines.join('\n')}\n\n`);

  // CSV: new events, a copy of an NDJSON event and of a lake event, and rows the contract rejects.
  const header = ['event_id', 'event_type', 'user_id', 'session_id', 'timestamp', 'device_type', 'content_id', 'page', 'location', 'app_version', 'ip_address'] as const;
  const lines = [header.join(',')];
  const add = (row: Record<string, string | number | undefined>, reason?: DlqReason) => {
    lines.push(csvOf(row, header));
    csvRows++;
    if (reason) {
      // The row as the event it stands for: its non-empty cells, numbers where the contract wants them.
      const raw = JSON.stringify(Object.fromEntries(header.filter((h) => row[h] !== undefined).map((h) => [h, row[h]])));
      invalid.push({ reason, raw });
    } else csvEvents.push(jsonOf(row));
  };
  for (let i = 0; i < 8; i++) {
    add({
      event_id: `csv_evt_${i}`,
      event_type: i % 2 === 0 ? 'video_play' : 'page_view',
      user_id: `csv_user_${i % 3}`,
      session_id: `csv_sess_${i % 3}`,
      timestamp: START + 3_600_000 * (i * 5) + 1234,
      device_type: 'tv',
      content_id: i % 2 === 0 ? `movie_${i}` : undefined,
      location: 'DE-BE',
      app_version: '9.0.1',
      ip_address: `192.0.2.${i + 10}`,
    });
  }
  add(flat(valid[3].line));
  add(flat(lakeLines[2]));
  add({ event_id: 'csv_bad_ts', event_type: 'click', user_id: 'csv_user_0', timestamp: 'yesterday' }, 'schema_violation');
  add({ event_id: 'csv_bad_type', event_type: 'video_rewind', user_id: 'csv_user_0', timestamp: START + 1000 }, 'schema_violation');
  add({ event_id: 'csv_no_user', event_type: 'click', timestamp: START + 2000 }, 'schema_violation');
  add({ event_id: 'csv_1999', event_type: 'click', user_id: 'csv_user_1', timestamp: Date.UTC(1999, 11, 31) }, 'timestamp_out_of_range');
  fs.writeFileSync(path.join(inputDir, 'b-events.csv'), `${lines.join('\n')}\n`);

  const expected = path.join(tmp, 'expected.ndjson');
  fs.writeFileSync(expected, `${[...lakeLines, ...ndjsonLines, ...csvEvents].join('\n')}\n`);
  duck = await Duck.open({ threads: 2 });
  await defineExpected(duck, expected, CLOCK);
  await duck.run(`CREATE TABLE lake_ids AS SELECT unnest(${sqlList(rows.map((r) => r.record.event_id))}) AS event_id`);
  orchestration = await startOrchestration(cfg, await bundle);
  client = orchestration.client;
}, 180_000);

afterAll(async () => {
  await orchestration?.stop();
  duck?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (cfg) {
    const keys = (await listObjects(s3Client(cfg), cfg.s3.bucket, '')).map((o) => o.key);
    if (keys.length > 0) await deleteObjects(s3Client(cfg), cfg.s3.bucket, keys);
  }
});

async function importId(): Promise<string> {
  return importIdOf(await listInputs(inputDir, undefined, s3Client(cfg), tmp));
}

/** Objects the import wrote (its keys start with `i-<importId>-`). */
async function importedObjects(prefix: string): Promise<string[]> {
  const id = await importId();
  return (await listObjects(s3Client(cfg), cfg.s3.bucket, prefix)).map((o) => o.key).filter((k) => path.basename(k).startsWith(`i-${id}-`));
}

async function view(name: string, keys: readonly string[]): Promise<void> {
  const files = await stageObjects(s3Client(cfg), cfg.s3.bucket, keys, path.join(tmp, 'stage', name));
  await duck.run(`CREATE OR REPLACE VIEW ${name} AS SELECT * FROM read_parquet(${sqlList(files)}, union_by_name = true)`);
}

async function expectEqual(zone: 'processed' | 'aggregated', table: string, periods: readonly string[], expected: string): Promise<void> {
  const keys = await Promise.all(
    periods.map(async (p) => (await getJson<RunManifest>(s3Client(cfg), cfg.s3.bucket, lakePaths.manifest(p.length === 10 ? 'daily' : 'hourly', p)))!.outputs[table]),
  );
  const name = `actual_${table}`;
  await view(name, keys);
  await duck.run(`CREATE OR REPLACE TEMP TABLE expected AS ${expected}`);
  const cols = (await duck.rows(`DESCRIBE expected`)).map((r) => `"${r.column_name as string}"`).join(', ');
  const unexpected = await duck.json(`SELECT ${cols} FROM ${name} EXCEPT ALL SELECT ${cols} FROM expected LIMIT 5`);
  const missing = await duck.json(`SELECT ${cols} FROM expected EXCEPT ALL SELECT ${cols} FROM ${name} LIMIT 5`);
  expect({ table, missing, unexpected }).toEqual({ table, missing: [], unexpected: [] });
  expect(Number(await duck.scalar(`SELECT count(*) FROM ${name}`))).toBeGreaterThan(0);
}

describe('npm run import', () => {
  it('a dry run reports what it would do and writes nothing', async () => {
    const { stdout } = await run(TSX, ['ingestion/import/main.ts', inputDir, '--dry-run'], { env });
    const accepted = Number(await duck.scalar(`SELECT count(*) FROM exp_events WHERE event_id NOT IN (SELECT event_id FROM lake_ids)`));
    expect(stdout).toMatch(new RegExp(`\\n  accepted +${accepted}\\n`));
    expect(await importedObjects('raw/')).toEqual([]);
    expect(await listObjects(s3Client(cfg), cfg.s3.bucket, 'imports/')).toEqual([]);
  });

  it('killed after its first object, the same command resumes: nothing lost, nothing twice', async () => {
    const child = spawnMain('import', 'ingestion/import/main.ts', [inputDir], env as Record<string, string>);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let killed = false;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
      if ((await importedObjects(lakePaths.rawEventsPrefix)).length > 0) {
        killed = child.kill('SIGKILL');
        break;
      }
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await exited;
    expect(killed).toBe(true);
    const id = await importId();
    const midway = await getJson<ImportState>(s3Client(cfg), cfg.s3.bucket, `imports/${id}/state.json`);
    expect(midway?.finishedAt).toBeUndefined();

    const { stdout, stderr } = await run(TSX, ['ingestion/import/main.ts', inputDir], { env });
    if (midway) expect(stderr).toContain(`resuming import ${id}`);
    const state = (await getJson<ImportState>(s3Client(cfg), cfg.s3.bucket, `imports/${id}/state.json`))!;
    expect(state.finishedAt).toBeDefined();

    const accepted = Number(await duck.scalar(`SELECT count(*) FROM exp_events WHERE event_id NOT IN (SELECT event_id FROM lake_ids)`));
    const read = ndjsonLines.length + csvRows;
    const rejected: Partial<Record<DlqReason, number>> = {};
    for (const r of invalid) rejected[r.reason] = (rejected[r.reason] ?? 0) + 1;
    expect(state.counts).toMatchObject({ read, accepted, rejected, rawRetired: 0 });
    expect(state.counts.duplicatesInLake + state.counts.duplicatesInImport).toBe(read - accepted - invalid.length);
    expect(state.counts.duplicatesInLake).toBeGreaterThanOrEqual(6);
    expect(stdout).toMatch(new RegExp(`\\n  accepted +${accepted}\\n`));
    expect(stdout).toContain(`periods to recompute ${state.hours.length} hour(s) in 2 day(s): ${DAYS.join(' ')}`);

    // Every imported event once, none that the lake held already, each in its event-time hour.
    await view('imported', await importedObjects(lakePaths.rawEventsPrefix));
    expect(await duck.json(`SELECT event_id, count(*) AS n FROM imported GROUP BY 1 HAVING n > 1`)).toEqual([]);
    expect(await duck.json(`SELECT event_id FROM imported WHERE event_id IN (SELECT event_id FROM lake_ids)`)).toEqual([]);
    expect(Number(await duck.scalar(`SELECT count(*) FROM imported`))).toBe(accepted);
    expect(await duck.json(`SELECT DISTINCT ip_address FROM imported WHERE ip_address NOT LIKE '%.0'`)).toEqual([]);

    // Every invalid row in the DLQ zone once, with its reason, its text as the collector would keep it.
    await view('dead', await importedObjects(lakePaths.rawDlqPrefix));
    const dead = (await duck.json(`SELECT reason, raw FROM dead`)) as { reason: string; raw: string }[];
    const ips = pseudonymiser(cfg);
    const key = (r: { reason: string; raw: string }) => `${r.reason} ${r.raw}`;
    expect(dead.map(key).sort()).toEqual(invalid.map((r) => ({ reason: r.reason, raw: ips.raw(r.raw, CLOCK) })).map(key).sort());

    // The hours and days it wrote to are marked for recomputation, as late data is.
    const dirty = await listDirty(ctx);
    expect(dirty.filter((d) => d.kind === 'daily').map((d) => d.period)).toEqual(DAYS);
    expect(dirty.filter((d) => d.kind === 'hourly').map((d) => d.period)).toEqual(state.hours);
  }, 180_000);

  it('once finished, the same command writes nothing; with --backfill it starts the backfill of the days it touched', async () => {
    const before = (await listObjects(s3Client(cfg), cfg.s3.bucket, 'raw/')).map((o) => o.key).sort();
    const { stdout } = await run(TSX, ['ingestion/import/main.ts', inputDir, '--backfill'], { env });
    expect(stdout).toContain('already finished');
    expect(stdout).toContain(`backfill started: 2 day(s) ${DAYS[0]}..${DAYS[1]}`);
    expect((await listObjects(s3Client(cfg), cfg.s3.bucket, 'raw/')).map((o) => o.key).sort()).toEqual(before);
    const workflowId = /\n  workflow (\S+)\n/.exec(stdout)![1];
    await client.workflow.getHandle(workflowId).result();
  }, 400_000);

  it('the backfill publishes views equal to the SQL over the valid, de-duplicated rows, and clears the marks', async () => {
    expect(await listDirty(ctx)).toEqual([]);
    await expectEqual('processed', 'events', HOURS, expectedSql.events());
    await expectEqual('aggregated', 'hourly_events', HOURS, expectedSql.hourlyEvents(HOURS));
    await expectEqual('aggregated', 'hourly_users', HOURS, expectedSql.hourlyUsers(HOURS));
    await expectEqual('aggregated', 'hourly_playback', HOURS, expectedSql.hourlyPlayback(HOURS));
    await expectEqual('processed', 'sessions', DAYS, expectedSql.sessions());
    await expectEqual('aggregated', 'daily_sessions', DAYS, expectedSql.dailySessions());
    await expectEqual('aggregated', 'daily_aggregates_with_dimensions', DAYS, expectedSql.dailyAggregatesWithDimensions());
    await expectEqual('aggregated', 'retention_cohorts', DAYS, expectedSql.retentionCohorts());
  }, 120_000);
});
