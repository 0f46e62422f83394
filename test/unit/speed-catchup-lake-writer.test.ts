/**
 * The lake writer's catch-up policy (batch-layer/lake-writer/buffers.ts): a
 * partition far behind rolls the files its batch moved past, and memory
 * pressure rolls the largest files until half the budget stays open.
 */
import { describe, expect, it } from 'vitest';
import { CATCHUP_MIN_ROLL_BYTES, filesToRelieve, passedFiles, PartitionState, type FileBuffer } from '../../batch-layer/lake-writer/buffers';

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 27, 0);

/** A partition read in offset order through a backlog of `hours` hours, `perHour` records each. */
function backlog(state: PartitionState, hours: number, perHour: number): Array<{ hour: string; offset: bigint }> {
  const out: Array<{ hour: string; offset: bigint }> = [];
  let offset = 0n;
  for (let h = 0; h < hours; h++) for (let i = 0; i < perHour; i++) out.push({ hour: new Date(T0 + h * HOUR).toISOString().slice(0, 13), offset: offset++ });
  return out;
}

describe('passedFiles', () => {
  it('while far behind, rolls every open file the batch did not add to; when live, none', () => {
    const state = new PartitionState('events.raw', 0);
    const records = backlog(state, 72, 200); // 100 kB per hour: above CATCHUP_MIN_ROLL_BYTES
    const open: number[] = [];
    let rolled = 0;
    for (let i = 0; i < records.length; i += 500) {
      const touched = new Set<FileBuffer>();
      for (const r of records.slice(i, i + 500)) touched.add(state.add('raw', r.hour, r.offset, 'x'.repeat(500), 500, 0));
      const lag = records.length - (i + 500);
      for (const b of passedFiles(state, touched, lag, 1000)) {
        state.take(b);
        state.uploaded(b);
        rolled += 1;
      }
      if (lag >= 1000) open.push(state.open.size);
    }
    // While behind, memory holds the hours of the last batch (at most 4 here), never the 72 hours of the backlog.
    expect(Math.max(...open)).toBeLessThanOrEqual(4);
    expect(rolled).toBeGreaterThanOrEqual(60); // all but the last ~1,000 records' hours
    // Caught up (lag below the threshold): the size/age policy decides again.
    expect(passedFiles(state, new Set(), 999, 1000)).toEqual([]);
    expect(state.open.size).toBeGreaterThan(0);
    // A straggler's small file into an old hour waits for the age policy (it gathers the next stragglers).
    const straggler = state.add('raw', '2026-11-20T05', 99_999n, 'x'.repeat(500), 500, 0);
    expect(passedFiles(state, new Set(), 50_000, 1000)).not.toContain(straggler);
    expect(straggler.bytes).toBeLessThan(CATCHUP_MIN_ROLL_BYTES);
    state.open.delete('raw|2026-11-20T05');
    // Commits can follow: nothing before the open files is held back.
    expect(state.committable()).toBe([...state.open.values()].reduce((lo, b) => (b.firstOffset < lo ? b.firstOffset : lo), state.nextOffset!));
  });
});

describe('filesToRelieve', () => {
  const file = (bytes: number) => ({ bytes }) as FileBuffer;
  it('rolls the largest files first, until at most the target stays open', () => {
    const files = [file(10), file(50), file(5), file(30), file(5)];
    expect(filesToRelieve(files, 30).map((f) => f.bytes)).toEqual([50, 30]);
    expect(filesToRelieve(files, 100).map((f) => f.bytes)).toEqual([]);
    expect(filesToRelieve(files, 0).map((f) => f.bytes)).toEqual([50, 30, 10, 5, 5]);
    // Many small files (a backlog spread over hours): as many as needed, not a fixed few.
    expect(filesToRelieve(Array.from({ length: 400 }, () => file(1)), 200)).toHaveLength(200);
  });
});
