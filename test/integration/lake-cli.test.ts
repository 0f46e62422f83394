/**
 * `npm run lake` against MinIO: raw objects as the lake writer writes them and
 * one batch table, queried through the CLI as a separate process.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { hourId, lakePaths, type RunManifest } from '../../common/lake';
import { putJson, uploadFile, withScratchDir } from '../../common/lake-io';
import { writeDlqParquet, writeRawParquet } from '../../batch-layer/lake-writer/parquet';
import { isolatedConfig } from '../support/isolated';

let cfg: Config;

function record(i: number, ts: number): EventRecord {
  const v = validateEvent(
    { event_id: `evt_${i}`, event_type: i % 2 ? 'video_play' : 'click', user_id: `user_${i % 4}`, timestamp: ts, properties: { device_type: 'mobile' } },
    ts,
  );
  if (!v.ok) throw new Error(v.detail);
  return v.record;
}

beforeAll(async () => {
  cfg = await isolatedConfig('lakecli');
  const s3 = s3Client(cfg);
  await withScratchDir(cfg, async (dir) => {
    // Day 1: 6 events in hour 10 on partition 0; day 2: 4 events in hour 03 on partition 1.
    const day1 = Array.from({ length: 6 }, (_, i) => ({ record: record(i, Date.UTC(2024, 4, 1, 10, i)), partition: 0, offset: String(i) }));
    const day2 = Array.from({ length: 4 }, (_, i) => ({ record: record(10 + i, Date.UTC(2024, 4, 2, 3, i)), partition: 1, offset: String(i) }));
    for (const rows of [day1, day2]) {
      const file = path.join(dir, `${rows[0].partition}.parquet`);
      await writeRawParquet(rows, file);
      await uploadFile(s3, cfg.s3.bucket, lakePaths.rawObject(hourId(rows[0].record.ts), rows[0].partition, rows[0].offset, rows.at(-1)!.offset), file);
    }
    const dlq = path.join(dir, 'dlq.parquet');
    await writeDlqParquet([{ dead: { reason: 'malformed_json', detail: 'x', received_at: Date.UTC(2024, 4, 1), raw: '{' }, topic: 'events.dlq', partition: 0, offset: '0' }], dlq);
    await uploadFile(s3, cfg.s3.bucket, lakePaths.dlqObject('2024-05-01', 0, '0', '0'), dlq);
    // A batch table, as the batch layer publishes it.
    const binge = path.join(dir, 'binge.parquet');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    await conn.run(`COPY (SELECT 'user_1' AS user_id, 3 AS completes) TO '${binge}' (FORMAT parquet)`);
    conn.closeSync();
    db.closeSync();
    // Readers go through the manifest: publish it the way the batch layer does, the object first.
    const key = lakePaths.table('aggregated', 'binge_users', '2024-05-01', 'daily-2024-05-01-test');
    await uploadFile(s3, cfg.s3.bucket, key, binge);
    const manifest: RunManifest = {
      kind: 'daily', period: '2024-05-01', runId: 'daily-2024-05-01-test', startedAt: new Date().toISOString(), publishedAt: new Date().toISOString(),
      inputs: [], outputs: { binge_users: key }, rowCounts: { binge_users: 1 }, checks: [],
    };
    await putJson(s3, cfg.s3.bucket, lakePaths.manifest('daily', '2024-05-01'), manifest);
    // A run that died before its manifest left its object beside the published one: nobody reads it.
    await uploadFile(s3, cfg.s3.bucket, lakePaths.table('aggregated', 'binge_users', '2024-05-01', 'daily-2024-05-01-died'), binge);
  });
});

function lake(args: string[], stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'batch-layer/lake-cli/main.ts'), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, S3_BUCKET: cfg.s3.bucket, LOG_LEVEL: 'warn' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

describe('npm run lake', () => {
  it('answers SQL over raw_events as CSV', async () => {
    const r = await lake(['sql', 'SELECT dt::VARCHAR AS dt, hour, event_type, count(*) AS n FROM raw_events GROUP BY ALL ORDER BY ALL', '--format', 'csv']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('dt,hour,event_type,n\n2024-05-01,10,click,3\n2024-05-01,10,video_play,3\n2024-05-02,3,click,2\n2024-05-02,3,video_play,2\n');
  });

  it('stages only the days asked for', async () => {
    const r = await lake(['sql', 'SELECT count(*) AS n, min(event_id) AS first FROM raw_events', '--from', '2024-05-02', '--to', '2024-05-02', '-f', 'csv']);
    expect(r.stdout).toBe('n,first\n4,evt_10\n');
  });

  it('prints an aligned table by default and joins raw with batch tables', async () => {
    const r = await lake(['sql', 'SELECT b.user_id, b.completes, count(*) AS events FROM binge_users b JOIN raw_events e USING (user_id) GROUP BY ALL']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^user_id\s+│\s+completes │ events$/);
    expect(r.stdout).toMatch(/user_1\s+│\s+3 │\s+3/);
    expect(r.stdout).toMatch(/\(1 row\)/);
  });

  it('lists the tables with row counts', async () => {
    const r = await lake(['tables', '--format', 'csv']);
    expect(r.code).toBe(0);
    const rows = new Map(r.stdout.trim().split('\n').slice(1).map((l) => { const [name, objects, n] = l.split(','); return [name, [Number(objects), Number(n)]]; }));
    expect(rows.get('raw_events')).toEqual([2, 10]);
    expect(rows.get('dlq')).toEqual([1, 1]);
    expect(rows.get('binge_users')).toEqual([1, 1]);
    expect(rows.get('sessions')).toEqual([0, 0]);
  });

  it('writes Parquet', async () => {
    const out = path.join(cfg.batch.scratchDir, `lake-cli-${cfg.s3.bucket}.parquet`);
    await fs.mkdir(path.dirname(out), { recursive: true });
    const r = await lake(['sql', 'SELECT event_id, ts FROM raw_events WHERE event_type = \'click\'', '--format', 'parquet', '--out', out]);
    expect(r.stdout).toBe(`wrote 5 rows to ${out}\n`);
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const n = (await conn.runAndReadAll(`SELECT count(*)::INT FROM read_parquet('${out}')`)).getRowsJson()[0][0];
    conn.closeSync();
    db.closeSync();
    await fs.rm(out);
    expect(n).toBe(5);
  });

  it('explains unknown tables, unpublished tables and SQL errors', async () => {
    const unknown = await lake(['sql', 'SELECT * FROM nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/unknown table nope; the lake's tables are: raw_events, dlq, events, sessions/);
    const empty = await lake(['sql', 'SELECT * FROM sessions']);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/sessions has no objects under s3:\/\/.*\/processed\/sessions\//);
    const bad = await lake(['sql', 'SELEC 1']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Parser Error: syntax error at or near "SELEC"/);
  });

  it('runs statements from an interactive session', async () => {
    const r = await lake(['repl', '--no-progress'], 'SELECT count(*) AS n\n  FROM raw_events;\n.format csv\nSELECT reason FROM dlq;\n.quit\n');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/n\s*\n─+\n\s*10\n\(1 row\)/);
    expect(r.stdout).toMatch(/reason\nmalformed_json\n/);
  });
});
