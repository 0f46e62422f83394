/**
 * The lake writer's per-event path without Kafka or S3: pre-built records of events.raw go
 * through the writer's own decode → buffer (a file per partition and hour) → Parquet encode,
 * with its roll size, buffer bound and upload concurrency; the objects are written to a scratch
 * folder and removed. Prints CPU µs per event (all threads, and the main thread alone) and the
 * peak RSS, so a change to that path is measured before and after the same way.
 *
 *   npx tsx bench/lake-writer.ts --help
 *   flock /tmp/itest.lock npx tsx bench/lake-writer.ts --events 400000
 *
 * Records: the collector's records (simulated events of the last hour through validateEvent,
 * as JSON bytes), --pool distinct ones repeated with fresh offsets, spread round-robin over
 * --partitions partitions in fetches of --batch; every --invalid-every'th is broken JSON (a
 * dead letter). CPU is process.cpuUsage (DuckDB's encoder threads included) and the main
 * thread's utime+stime from /proc, from the first record to the last object written.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from '../common/config';
import { validateEvent } from '../common/contract';
import { simulate } from '../ingestion/simulator/generate';
import { PartitionState, filesToRelieve, type FileBuffer } from '../batch-layer/lake-writer/buffers';
import { decodeMessage, type MessageLike } from '../batch-layer/lake-writer/decode';
import { writeParquetLines } from '../batch-layer/lake-writer/parquet';

interface Flags {
  events: number;
  pool: number;
  partitions: number;
  batch: number;
  invalidEvery: number;
  rollBytes: number;
  maxBufferBytes: number;
  concurrency: number;
}

const TOPIC = 'events.raw';

function int(name: string, min = 1) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

/** The collector's records for simulated events of the last hour, as the bytes on events.raw. */
function pool(size: number): Buffer[] {
  const now = Date.now();
  const out: Buffer[] = [];
  for (const send of simulate({ seed: 12, users: 5000, startMs: now - 3600_000, endMs: now })) {
    if (send.kind !== 'valid') continue;
    const v = validateEvent(JSON.parse(send.line), now);
    if (!v.ok) continue;
    out.push(Buffer.from(JSON.stringify(v.record)));
    if (out.length === size) break;
  }
  return out;
}

/** This thread's CPU time (µs) from /proc: the main thread alone, without DuckDB's workers. */
function mainThreadCpuUs(): number {
  const stat = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // utime, stime in clock ticks of 10 ms
}

async function main(): Promise<void> {
  const cfg = loadConfig(process.env);
  const program = new Command('bench-lake-writer')
    .description("Feed pre-built records through the lake writer's decode, buffer and Parquet encode (no Kafka, no S3); CPU µs per event and peak RSS.")
    .option('--events <n>', 'records to feed', int('--events'), 400_000)
    .option('--pool <n>', 'distinct records, repeated with fresh offsets', int('--pool'), 40_000)
    .option('--partitions <n>', 'partitions the records are spread over', int('--partitions'), 6)
    .option('--batch <n>', 'records per fetch of one partition', int('--batch'), 500)
    .option('--invalid-every <n>', 'every n-th record is broken JSON (0: none)', int('--invalid-every', 0), 1000)
    .option('--roll-bytes <n>', 'roll a file at this many buffered bytes (LAKE_ROLL_BYTES)', int('--roll-bytes'), cfg.lake.rollBytes)
    .option('--max-buffer-bytes <n>', 'wait for encodes above this many buffered bytes (LAKE_MAX_BUFFER_BYTES)', int('--max-buffer-bytes'), cfg.lake.maxBufferBytes)
    .option('--concurrency <n>', 'objects encoded at once (LAKE_UPLOAD_CONCURRENCY)', int('--concurrency'), cfg.lake.uploadConcurrency)
    .showHelpAfterError()
    .parse();
  const f = program.opts<Flags>();
  const records = pool(f.pool);
  const broken = Buffer.from('{"event_id": "broken", ');
  const scratch = await fsp.mkdtemp(path.join(os.tmpdir(), `bench-lake-writer-${randomBytes(3).toString('hex')}-`));
  const states = Array.from({ length: f.partitions }, (_, p) => new PartitionState(TOPIC, p));
  const offsets = new Array<number>(f.partitions).fill(0);
  const uploads = new Set<Promise<void>>();
  let free = f.concurrency;
  const waiting: (() => void)[] = [];
  let objects = 0;
  let objectBytes = 0;
  let rows = 0;
  let fast = 0;

  const totalBytes = () => states.reduce((n, s) => n + s.bufferedBytes(), 0);
  const roll = (state: PartitionState, buf: FileBuffer) => {
    state.take(buf);
    const task = (async () => {
      if (free > 0) free -= 1;
      else await new Promise<void>((r) => waiting.push(r));
      try {
        const file = path.join(scratch, `${randomBytes(6).toString('hex')}.parquet`);
        await writeParquetLines(buf.kind === 'raw' ? 'raw' : 'dlq', buf.rows, file);
        objectBytes += (await fsp.stat(file)).size;
        objects += 1;
        rows += buf.rows.length;
        await fsp.rm(file);
      } finally {
        const next = waiting.shift();
        if (next) next();
        else free += 1;
      }
      state.uploaded(buf);
    })();
    uploads.add(task);
    void task.finally(() => uploads.delete(task));
  };

  global.gc?.();
  const rss0 = process.memoryUsage.rss();
  let peak = rss0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuUs();
  const t0 = performance.now();
  for (let i = 0; i < f.events; ) {
    const p = Math.floor(i / f.batch) % f.partitions;
    const state = states[p];
    const end = Math.min(f.events, i + f.batch);
    for (; i < end; i++) {
      const value = f.invalidEvery > 0 && i % f.invalidEvery === f.invalidEvery - 1 ? broken : records[i % records.length];
      const message: MessageLike = { value, offset: String(offsets[p]++), timestamp: String(Date.now()) };
      const d = decodeMessage(TOPIC, true, p, message);
      if (d.head !== undefined) fast += 1;
      const buf = state.add(d.kind, d.period, BigInt(message.offset), d.line, undefined, Date.now(), d.head);
      if (buf.bytes >= f.rollBytes) roll(state, buf);
    }
    if (totalBytes() > f.maxBufferBytes) {
      // The writer's back-pressure: roll the biggest open files until half the bound stays open, wait for encodes.
      const open = new Map<FileBuffer, PartitionState>();
      for (const s of states) for (const b of s.open.values()) open.set(b, s);
      for (const b of filesToRelieve([...open.keys()], f.maxBufferBytes / 2)) roll(open.get(b)!, b);
      while (totalBytes() > f.maxBufferBytes && uploads.size > 0) await Promise.race(uploads);
    }
    await new Promise((r) => setImmediate(r));
  }
  for (const s of states) for (const b of [...s.open.values()]) roll(s, b);
  while (uploads.size > 0) await Promise.all([...uploads]);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const mainUs = mainThreadCpuUs() - main0;
  clearInterval(sampler);
  peak = Math.max(peak, process.resourceUsage().maxRSS * 1024);
  await fsp.rm(scratch, { recursive: true, force: true });

  const allUs = cpu.user + cpu.system;
  const mib = (n: number) => (n / 2 ** 20).toFixed(0);
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  process.stdout.write(
    [
      `events ${f.events} (pool ${records.length}, ${f.partitions} partitions, fetches of ${f.batch}, 1 in ${f.invalidEvery || '∞'} broken)`,
      `roll ${mib(f.rollBytes)} MiB, buffer bound ${mib(f.maxBufferBytes)} MiB, ${f.concurrency} encodes at once; load ${load}`,
      `objects ${objects} (${rows} rows, ${mib(objectBytes)} MiB of Parquet); ${fast} records took the canonical fast path`,
      `wall ${seconds.toFixed(2)} s = ${Math.round(f.events / seconds)} events/s`,
      `cpu  ${(allUs / f.events).toFixed(2)} µs/event all threads, ${(mainUs / f.events).toFixed(2)} µs/event main thread`,
      `rss  ${mib(rss0)} MiB before, ${mib(peak)} MiB peak (+${mib(peak - rss0)} MiB)`,
      '',
    ].join('\n'),
  );
}

await main();
