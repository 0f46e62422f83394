/**
 * The lake writer behind the catch-up backlog of issue 17 (≥ 500,000 events
 * over more than 3 days of event time, filled while no consumer runs): a real
 * lake-writer process drains it with bounded memory, commits as it goes, writes
 * objects of about a partition-hour (nothing near the backlog's size), and
 * every message lands in the lake once, in the hour of its event time.
 */
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';
import { lakePaths } from '../../common/lake';
import { deleteObjects, listObjects, stageObjects, withScratchDir } from '../../common/lake-io';
import { isolatedConfig } from '../support/isolated';
import { spawnLakeWriter } from './lake-writer-support';
import { catchupBacklog, CATCHUP_RETENTION_MS, exited, freePort, metricSum, produceFast, samplePeak, type Child } from './speed-catchup-support';
import { waitFor } from './speed-support';

describe('lake writer: restart behind a backlog of days', () => {
  let cfg: Config;
  let records: EventRecord[];
  const children: Child[] = [];

  beforeAll(async () => {
    cfg = await isolatedConfig('speed-catchup-lake', { SPEED_RETENTION_MS: String(CATCHUP_RETENTION_MS) });
    records = catchupBacklog(cfg, Date.now());
    expect(records.length).toBeGreaterThanOrEqual(500_000);
    await produceFast(cfg, records);
  });

  afterAll(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    if (cfg) {
      const s3 = s3Client(cfg);
      await deleteObjects(s3, cfg.s3.bucket, (await listObjects(s3, cfg.s3.bucket, '')).map((o) => o.key));
    }
  });

  it('drains the backlog with bounded memory and small objects, every message in the lake once', async () => {
    const port = await freePort();
    const maxBuffer = 64 * 1024 * 1024;
    const proc = spawnLakeWriter(cfg, {
      LAKE_WRITER_PORT: String(port),
      LAKE_MAX_BUFFER_BYTES: String(maxBuffer),
      // Stragglers' small files wait for the roll age; a short one keeps the test's tail short.
      LAKE_ROLL_AGE_SEC: '15',
    });
    const writer: Child = { proc, port, peakMiB: 0, exits: [] };
    children.push(writer);
    proc.on('exit', (code, signal) => writer.exits.push({ code, signal }));
    const admin = kafkaClient(cfg, 'speed-catchup-lake').admin();
    await admin.connect();
    const t0 = Date.now();
    let firstCommitAt = 0;
    try {
      await waitFor(
        'the lake writer to commit the end of every partition',
        async () => {
          samplePeak(writer);
          if (writer.exits.length > 0) throw new Error(`lake writer exited: ${JSON.stringify(writer.exits)}`);
          const [t] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [cfg.kafka.rawTopic] });
          const committed = t.partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
          if (committed > 0 && firstCommitAt === 0) firstCommitAt = Date.now();
          return committed >= records.length ? true : undefined;
        },
        180_000,
        250,
      );
    } finally {
      await admin.disconnect();
    }
    const seconds = (Date.now() - t0) / 1000;
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    proc.kill('SIGTERM');
    expect(await exited(writer)).toBe(0);

    const objects = await listObjects(s3Client(cfg), cfg.s3.bucket, lakePaths.rawEventsPrefix);
    const largest = objects.reduce((n, o) => Math.max(n, o.size), 0);
    process.stderr.write(
      `[speed-catchup] lake writer: ${records.length} messages committed in ${seconds.toFixed(1)} s (first commit after ${((firstCommitAt - t0) / 1000).toFixed(1)} s), ` +
        `peak RSS ${Math.round(writer.peakMiB)} MiB, ${objects.length} objects, largest ${(largest / 1024).toFixed(0)} KiB\n`,
    );
    // It commits as it goes (catch-up rolls), not only once files reach the 60 s roll age.
    expect(metricSum(metrics, 'lake_writer_catchup_rolls_total')).toBeGreaterThan(0);
    expect(firstCommitAt - t0).toBeLessThan(30_000);
    expect(metricSum(metrics, 'lake_writer_upload_failures_total')).toBe(0);
    // Bounded by the buffer budget and the process' own footprint, not by the backlog (≈ 250 MB of records).
    expect(writer.peakMiB).toBeLessThan(600);
    // Objects of about one partition-hour each: nothing near the backlog's size.
    expect(largest).toBeLessThan(1024 * 1024);
    // Every message once, in the hour of its event time.
    const rows = await withScratchDir(cfg, async (dir) => {
      await stageObjects(s3Client(cfg), cfg.s3.bucket, objects.map((o) => o.key), dir);
      const db = await DuckDBInstance.create(':memory:');
      const conn = await db.connect();
      try {
        const glob = path.join(dir, lakePaths.rawEventsPrefix, '*/*/*.parquet');
        const sql = `SELECT count(*)::INT AS n, count(DISTINCT (kafka_partition, kafka_offset))::INT AS positions,
                            count(*) FILTER (WHERE strftime(make_timestamp(ts * 1000), '%Y-%m-%dT%H') <> dt::VARCHAR || 'T' || lpad(hour::VARCHAR, 2, '0'))::INT AS misplaced
                     FROM read_parquet('${glob}', hive_partitioning = true)`;
        return (await conn.runAndReadAll(sql)).getRowObjectsJson()[0] as { n: number; positions: number; misplaced: number };
      } finally {
        conn.closeSync();
        db.closeSync();
      }
    });
    expect(rows).toEqual({ n: records.length, positions: records.length, misplaced: 0 });
  });
});
