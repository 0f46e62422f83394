/**
 * The independent SQL of the tests (test/support/expected-sql.ts) and the contract agree on a
 * stream that mixes schema_version 1 and 2: the same events are valid, with the same derived
 * dimensions, and a version 2 encoding of the simulator's events gives the dimensions its
 * version 1 encoding does (the upcaster).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateEvent } from '../../common/contract';
import { Duck } from '../../batch-layer/jobs/duck';
import { simulate, writeNdjson, type SimulationOptions } from '../../ingestion/simulator/generate';
import { defineExpected } from '../support/expected-sql';

const START = Date.UTC(2026, 10, 20);
const CLOCK = START + 2 * 86_400_000;
const base: SimulationOptions = { seed: 77, users: 60, startMs: START, endMs: START + 86_400_000, duplicateFraction: 0.03, invalidFraction: 0.03 };

/** event_id → [device_type, country, app_version, content_id] of the first valid send of each id. */
function contractView(opts: SimulationOptions): Map<string, unknown[]> {
  const out = new Map<string, unknown[]>();
  for (const send of simulate(opts)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(send.line);
    } catch {
      continue;
    }
    const v = validateEvent(parsed, CLOCK, { latenessHorizonMs: Infinity });
    if (v.ok && !out.has(v.record.event_id)) out.set(v.record.event_id, [v.record.device_type, v.record.country, v.record.app_version, v.record.content_id]);
  }
  return out;
}

let tmp: string;
let duck: Duck;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'v2-'));
  duck = await Duck.open({ threads: 1 });
});
afterAll(() => {
  duck?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('schema_version 2 in the simulator, the contract and the independent SQL', () => {
  it('encodes about the asked fraction of devices as version 2, and the same events either way', () => {
    const lines = [...simulate({ ...base, v2Fraction: 0.5 })].map((s) => s.line);
    const v2 = lines.filter((l) => l.includes('"schema_version":2')).length;
    expect(v2 / lines.length).toBeGreaterThan(0.25);
    expect(v2 / lines.length).toBeLessThan(0.75);
    // Same facts: the contract derives the same dimensions for every event, whatever its encoding.
    expect(contractView({ ...base, v2Fraction: 0.5 })).toEqual(contractView(base));
    expect(contractView({ ...base, v2Fraction: 1 })).toEqual(contractView(base));
  });

  it('the independent SQL finds the events and dimensions the contract does', async () => {
    const file = path.join(tmp, 'mixed.ndjson');
    await writeNdjson(file, { ...base, v2Fraction: 0.5 });
    await defineExpected(duck, file, CLOCK);
    const rows = await duck.rows(`SELECT event_id, device_type, country, app_version, content_id FROM exp_events`);
    const sql = new Map(rows.map((r) => [String(r.event_id), [r.device_type, r.country, r.app_version, r.content_id ?? null]]));
    const contract = contractView({ ...base, v2Fraction: 0.5 });
    expect(sql.size).toBe(contract.size);
    expect(sql).toEqual(contract);
    expect(new Set(rows.map((r) => r.device_type)).size).toBeGreaterThan(3);
  });
});
