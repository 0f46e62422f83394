/**
 * A daily backfill in `steps` mode (each day's hours in one activity, ahead of the
 * days; each day in one activity) publishes what the `children` mode (an hourly child
 * workflow per hour, the day's shards as activities, as the schedules run them)
 * publishes: the same days and hours, the same tables, row counts and checks, and
 * every table object byte for byte. Each mode runs on the real Temporal dev server
 * into its own bucket over the same raw objects. A corrupt object still fails only
 * its day, named.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3Client } from '../../common/clients';
import type { Config } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { lakePaths, type RunManifest } from '../../common/lake';
import { getJson, listObjects, uploadFile } from '../../common/lake-io';
import { writeRawParquet } from '../../batch-layer/lake-writer/parquet';
import { failuresOf, startBackfill } from '../../workflows/cli/backfill';
import { periodWorkflowId } from '../../workflows/ids';
import { buildWorkflowBundle } from '../../workflows/service';
import { progressQuery } from '../../workflows/workflows';
import { isolatedConfig } from '../support/isolated';
import { quietTemporalRuntime } from '../support/temporal';
import { orchestrationOverrides, putCorruptObject, seedRaw, startOrchestration, type Orchestration } from './workflow-support';

process.env.LOG_LEVEL ??= 'warn';

const FIRST = '2025-05-01';
const LAST = '2025-05-03';
const START = Date.parse(`${FIRST}T00:00:00Z`);
const DAYS = 3;

let children: { cfg: Config; client: Client; orchestration: Orchestration };
let steps: { cfg: Config; client: Client; orchestration: Orchestration };

const T = (iso: string) => Date.parse(iso);

function record(id: string, user: string, ts: number, receivedAt: number): EventRecord {
  const v = validateEvent({ event_id: id, event_type: 'click', user_id: user, timestamp: ts, properties: { device_type: 'mobile' } }, ts);
  if (!v.ok) throw new Error(v.detail);
  return { ...v.record, received_at: receivedAt };
}

/**
 * Ids re-sent with a timestamp in a later hour (and day), received later: the later
 * hours must drop them, through the indexes of hours published before them or, when
 * they ran first, through the conflict marks and re-runs that follow.
 */
async function putCrossHourDuplicates(cfg: Config): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bf-dups-'));
  try {
    const objects: [string, EventRecord[]][] = [
      ['2025-05-01T03', [record('dup-1', 'dup-user-1', T('2025-05-01T03:10:00Z'), T('2025-05-01T03:10:01Z'))]],
      ['2025-05-02T05', [record('dup-1', 'dup-user-1', T('2025-05-02T05:40:00Z'), T('2025-05-02T05:40:01Z'))]],
      ['2025-05-02T22', [record('dup-2', 'dup-user-2', T('2025-05-02T22:30:00Z'), T('2025-05-02T22:30:01Z'))]],
      ['2025-05-03T01', [record('dup-2', 'dup-user-2', T('2025-05-03T01:15:00Z'), T('2025-05-03T01:15:01Z'))]],
    ];
    for (const [i, [hour, records]] of objects.entries()) {
      const file = path.join(tmp, `${i}.parquet`);
      await writeRawParquet(records.map((r, j) => ({ record: r, partition: 5, offset: String(i * 10 + j) })), file);
      await uploadFile(s3Client(cfg), cfg.s3.bucket, lakePaths.rawObject(hour, 5, String(i * 10), String(i * 10 + records.length - 1)), file);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Every manifest of the bucket by key, and the ETag (the content's MD5) of every output object. */
async function published(cfg: Config): Promise<{ manifests: Map<string, RunManifest>; etags: Map<string, string> }> {
  const s3 = s3Client(cfg);
  const etags = new Map<string, string>();
  for (const zone of ['processed/', 'aggregated/']) for (const o of await listObjects(s3, cfg.s3.bucket, zone)) etags.set(o.key, o.etag);
  const manifests = new Map<string, RunManifest>();
  for (const kind of ['hourly', 'daily']) {
    for (const o of await listObjects(s3, cfg.s3.bucket, `_manifests/${kind}/`)) manifests.set(o.key, (await getJson<RunManifest>(s3, cfg.s3.bucket, o.key))!);
  }
  return { manifests, etags };
}

beforeAll(async () => {
  quietTemporalRuntime();
  const bundle = await buildWorkflowBundle();
  const side = async (label: string) => {
    const cfg = await isolatedConfig(label, orchestrationOverrides(label));
    await seedRaw(cfg, { seed: 23, users: 12, startMs: START, endMs: START + DAYS * 86_400_000 });
    await putCrossHourDuplicates(cfg);
    const orchestration = await startOrchestration(cfg, bundle);
    return { cfg, client: orchestration.client, orchestration };
  };
  children = await side('bfchildren');
  steps = await side('bfsteps');
}, 180_000);

afterAll(async () => {
  await children?.orchestration.stop();
  await steps?.orchestration.stop();
});

describe('daily backfill in steps mode', () => {
  it('publishes what the children mode publishes, byte for byte, with one workflow per day', async () => {
    const a = await startBackfill(children.client, children.cfg, { kind: 'daily', from: FIRST, to: LAST, mode: 'children' });
    await a.handle.result();
    const b = await startBackfill(steps.client, steps.cfg, { kind: 'daily', from: FIRST, to: LAST, mode: 'steps', concurrency: 2 });
    await b.handle.result();
    expect(await b.handle.query(progressQuery)).toMatchObject({ total: DAYS, done: DAYS, failed: 0, running: 0, remaining: 0, state: 'finished' });

    const old = await published(children.cfg);
    const now = await published(steps.cfg);
    expect([...now.manifests.keys()].sort()).toEqual([...old.manifests.keys()].sort());
    expect([...old.manifests.keys()].filter((k) => k.startsWith('_manifests/daily/'))).toHaveLength(DAYS);
    expect([...old.manifests.keys()].filter((k) => k.startsWith('_manifests/hourly/'))).toHaveLength(DAYS * 24);
    // The re-sent copies were dropped in both: their later hours count one event fewer than they hold.
    for (const hour of ['dt=2025-05-02/hour=05', 'dt=2025-05-03/hour=01']) {
      const m = now.manifests.get(`_manifests/hourly/${hour}.json`)!;
      expect(m.duplicates?.synthetic, hour).toBeGreaterThanOrEqual(1);
    }
    for (const [key, m] of old.manifests) {
      const n = now.manifests.get(key)!;
      expect(Object.keys(n.outputs).sort(), key).toEqual(Object.keys(m.outputs).sort());
      expect(n.rowCounts, key).toEqual(m.rowCounts);
      expect(n.checks, key).toEqual(m.checks);
      expect(n.duplicates, key).toEqual(m.duplicates);
      // An hour reads raw objects (the same keys); a day reads its hours' published objects (keys of each run, the same bytes).
      if (m.kind === 'hourly') expect(n.inputs.map((i) => i.key), key).toEqual(m.inputs.map((i) => i.key));
      else expect(n.inputs.map((i) => i.etag), key).toEqual(m.inputs.map((i) => i.etag));
      for (const [table, objectKey] of Object.entries(m.outputs)) {
        expect(old.etags.get(objectKey), `${key} ${table}`).toBeDefined();
        expect(now.etags.get(n.outputs[table]), `${key} ${table}`).toBe(old.etags.get(objectKey));
      }
    }

    // Each day is still its own workflow (its progress and failures in the UI); no hour is.
    const prefix = steps.cfg.orchestration.workflowIdPrefix;
    for (let d = 0; d < DAYS; d++) {
      const day = new Date(START + d * 86_400_000).toISOString().slice(0, 10);
      expect((await steps.client.workflow.getHandle(periodWorkflowId(prefix, 'daily', day)).describe()).status.name).toBe('COMPLETED');
      await expect(steps.client.workflow.getHandle(periodWorkflowId(prefix, 'hourly', `${day}T05`)).describe()).rejects.toThrow();
    }
    expect(await listObjects(s3Client(steps.cfg), steps.cfg.s3.bucket, '_staging/')).toEqual([]);
  });

  it('fails only the day with a corrupt object, naming it', async () => {
    const day = '2025-05-10';
    const dayStart = Date.parse(`${day}T00:00:00Z`);
    await seedRaw(steps.cfg, { seed: 29, users: 6, startMs: dayStart, endMs: dayStart + 86_400_000, offsetBase: 1_000_000 });
    const corruptKey = await putCorruptObject(steps.cfg, `${day}T03`);
    const { handle } = await startBackfill(steps.client, steps.cfg, { kind: 'daily', from: day, to: day, mode: 'steps' });
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failures = failuresOf(err);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ period: day, type: 'CorruptObjectError', objectKey: corruptKey });
    // The day's other hours were published; the day was not.
    const s3 = s3Client(steps.cfg);
    expect(await getJson(s3, steps.cfg.s3.bucket, `_manifests/hourly/dt=${day}/hour=02.json`)).not.toBeNull();
    expect(await getJson(s3, steps.cfg.s3.bucket, `_manifests/hourly/dt=${day}/hour=03.json`)).toBeNull();
    expect(await getJson(s3, steps.cfg.s3.bucket, `_manifests/daily/dt=${day}.json`)).toBeNull();
  });
});
