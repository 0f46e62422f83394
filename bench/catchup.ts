/**
 * Catch-up benchmark (issue 17): a backlog of simulated events spread over
 * several days of event time is written straight to Kafka (records shaped as
 * the collector writes them, via validateEvent) while no consumer runs; then
 * the speed layer, and separately the lake writer, are started as their own
 * processes and timed while they drain it.
 *
 * Reports per layer: drain rate (messages / s from the first applied offset to
 * the last; start-up shown apart), peak RSS of the process (VmHWM), its CPU and
 * Redis' CPU; for the speed layer the Redis step sizes (args, keys, bytes,
 * messages per step, from its histograms); for the lake writer the objects
 * written (count, largest, rows).
 *
 *   npx tsx bench/catchup.ts                         # 500,000 events over 3.5 days, speed layer then lake writer
 *   npx tsx bench/catchup.ts --events 200000 --days 3 --layers speed --speed-env SPEED_STEP_MAX_ARGS=20000
 *   npx tsx bench/catchup.ts --events 2000000 --layers speed,streams   # beside the Kafka Streams peer (issue 12 §4)
 *
 * Uses its own topics, consumer groups, Redis key prefix and bucket, removed at the end (unless --keep-data).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { kafkaClient, redisClient, s3Client } from '../common/clients';
import { loadConfig, REPO_ROOT, type Config } from '../common/config';
import { validateEvent } from '../common/contract';
import { readOffsets, speedKeys } from '../common/speed-keys';
import { ensureBucket, ensureTopics } from '../common/topics';
import { deleteObjects, listObjects } from '../common/lake-io';
import { simulate } from '../ingestion/simulator/generate';
import { envPairs, findPid, freePort, isolationEnv, stackPids } from './support';
import { ensureStreamsJar } from './peers/setup';

const DAY = 86_400_000;
const TICKS = 100; // getconf CLK_TCK on Linux
const out = (s: string) => process.stdout.write(`${s}\n`);

interface Flags {
  events: number;
  days: number;
  layers: string[];
  partitions: number;
  speedEnv: string[];
  lakeEnv: string[];
  timeout: number;
  keepData: boolean;
  cpuProf?: string;
  streamsThreads: number;
}

function proc(pid: number): { cpuSec: number; rssMiB: number; hwmMiB: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
    return { cpuSec: (Number(f[11]) + Number(f[12])) / TICKS, rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

function start(name: string, script: string, env: Record<string, string>, args: string[] = [], cpuProf?: string): ChildProcess {
  const prof = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(cpuProf, name)}`] : [];
  const child = spawn(process.execPath, [...prof, '--import', 'tsx', path.join(REPO_ROOT, script), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[${name}] ${d}`));
  return child;
}

async function stop(child: ChildProcess): Promise<number | string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode ?? child.exitCode;
  const done = new Promise<number | string | null>((r) => child.once('exit', (code, signal) => r(signal ?? code)));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const res = await done;
  clearTimeout(t);
  return res;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Generate the backlog and produce it: records keyed by user_id, as the collector writes them. */
async function fill(cfg: Config, f: Flags): Promise<{ messages: number; bytes: number; spanDays: number; seconds: number }> {
  const now = Date.now();
  // The simulator makes about 12.5 events per user and day: enough users for the requested count, and every
  // user's whole window (stopping early would cut the last days off: sends come in time order).
  const users = Math.ceil(f.events / (12 * f.days));
  const t0 = performance.now();
  const batch: Array<{ key: string; value: string }> = [];
  let messages = 0;
  let bytes = 0;
  let lo = Infinity;
  let hi = -Infinity;
  const kafka = kafkaClient(cfg, 'bench-catchup-fill');
  const producers = await Promise.all(
    Array.from({ length: 3 }, async () => {
      const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await p.connect();
      return p;
    }),
  );
  const inFlight = new Set<Promise<unknown>>();
  let next = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    const producer = producers[next++ % producers.length];
    const send = producer.send({ topic: cfg.kafka.rawTopic, acks: -1, messages: batch.splice(0) });
    inFlight.add(send);
    void send.finally(() => inFlight.delete(send));
    if (inFlight.size >= producers.length) await Promise.race(inFlight);
  };
  for (const s of simulate({ seed: 42, users, startMs: now - f.days * DAY, endMs: now, duplicateFraction: 0.03, lateFraction: 0.01 })) {
    if (s.kind === 'invalid') continue;
    const v = validateEvent(JSON.parse(s.line), now);
    if (!v.ok) continue;
    const value = JSON.stringify(v.record);
    batch.push({ key: v.record.user_id, value });
    messages += 1;
    bytes += value.length;
    lo = Math.min(lo, v.record.ts);
    hi = Math.max(hi, v.record.ts);
    if (batch.length === 5000) await flush();
  }
  await flush();
  await Promise.all(inFlight);
  await Promise.all(producers.map((p) => p.disconnect()));
  return { messages, bytes, spanDays: (hi - lo) / DAY, seconds: (performance.now() - t0) / 1000 };
}

async function scrape(url: string): Promise<string> {
  return (await fetch(url)).text();
}

function metricSum(text: string, name: string): number {
  let s = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) s += Number(line.slice(line.lastIndexOf(' ') + 1));
  return s;
}

/** A histogram's mean, interpolated p50/p99, and the smallest bound holding every observation. */
function hist(text: string, name: string): { count: number; mean: number; p50: number; p99: number; maxBound: number } {
  const buckets: Array<[number, number]> = [];
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`).exec(line);
    if (m) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const count = metricSum(text, `${name}_count`);
  const q = (p: number) => {
    const rank = p * count;
    let [prevLe, prevN] = [0, 0];
    for (const [le, n] of buckets) {
      if (n >= rank) return le === Infinity ? prevLe : prevLe + ((le - prevLe) * (rank - prevN)) / Math.max(1, n - prevN);
      [prevLe, prevN] = [le, n];
    }
    return prevLe;
  };
  return { count, mean: count > 0 ? metricSum(text, `${name}_sum`) / count : 0, p50: q(0.5), p99: q(0.99), maxBound: buckets.find(([, n]) => n >= count)?.[0] ?? Infinity };
}

interface Drain {
  /** RSS when the first progress showed (the process started, connected, assigned). */
  startRssMiB: number;
  startupSec: number;
  drainSec: number;
  /** From the first progress until 99 % of the backlog was done (the lake's last stragglers wait for the roll age). */
  drain99Sec: number;
  rate: number;
  peakRssMiB: number;
  cpuSec: number;
  redisCpuSec: number;
  exitedEarly: string | null;
}

/** Poll `progress` until it reaches `total`; time from the first progress to the end, and the process' peak RSS. */
async function timeDrain(child: ChildProcess, total: number, timeoutSec: number, progress: () => Promise<number>): Promise<Drain> {
  const redisPid = findPid('redis-server', `:${loadConfig().stack.redisPort}`);
  const r0 = redisPid ? proc(redisPid) : null;
  const t0 = performance.now();
  let first: { t: number; n: number } | null = null;
  let at99 = 0;
  let peak = 0;
  let cpu = 0;
  let rss = 0;
  let startRss = 0;
  for (;;) {
    const p = proc(child.pid!);
    if (p) [peak, cpu, rss] = [Math.max(peak, p.hwmMiB), p.cpuSec, p.rssMiB];
    if (child.exitCode !== null || child.signalCode !== null) {
      return { startRssMiB: startRss, startupSec: 0, drainSec: 0, drain99Sec: 0, rate: 0, peakRssMiB: peak, cpuSec: cpu, redisCpuSec: 0, exitedEarly: String(child.signalCode ?? child.exitCode) };
    }
    const n = await progress().catch(() => 0);
    const t = performance.now();
    if (n > 0 && first === null) {
      first = { t, n };
      startRss = rss;
    }
    if (n >= 0.99 * total && at99 === 0) at99 = t;
    if (n >= total) {
      const r1 = redisPid ? proc(redisPid) : null;
      const drainSec = (t - first!.t) / 1000;
      return { startRssMiB: startRss, startupSec: (first!.t - t0) / 1000, drainSec, drain99Sec: (at99 - first!.t) / 1000, rate: (total - first!.n) / Math.max(drainSec, 0.001), peakRssMiB: peak, cpuSec: cpu, redisCpuSec: r0 && r1 ? r1.cpuSec - r0.cpuSec : 0, exitedEarly: null };
    }
    if (t - t0 > timeoutSec * 1000) throw new Error(`not drained within ${timeoutSec} s (${n} of ${total})`);
    await sleep(100);
  }
}

/** CPU seconds of the shared broker so far (0 when it is not found). */
function brokerCpu(cfg: Config): number {
  const pid = stackPids(cfg).kafka;
  return (pid ? proc(pid)?.cpuSec : 0) ?? 0;
}

/** Events per CPU-second: of the engine alone, with its store, and with the broker's share during the drain. */
function perCore(messages: number, engineCpu: number, storeCpu: number, brokerCpuSec: number, store: string): string {
  const rate = (cpu: number) => Math.round(messages / Math.max(cpu, 0.001)).toLocaleString('en-US');
  return `per core: ${rate(engineCpu)} events/CPU-s of the engine, ${rate(engineCpu + storeCpu)} with ${store}, ${rate(engineCpu + storeCpu + brokerCpuSec)} with the broker too (broker CPU ${brokerCpuSec.toFixed(1)} s)`;
}

/**
 * The Kafka Streams peer (bench/peers/kafka-streams: per-minute counts with roll-ups, exactly_once_v2)
 * draining the same backlog in its own JVM, timed by its group's committed offsets like the lake writer.
 */
async function drainStreams(cfg: Config, id: string, f: Flags, total: number): Promise<void> {
  const jar = await ensureStreamsJar();
  const appId = `${id}.streams`;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-streams-'));
  const admin = kafkaClient(cfg, `${id}-streams-progress`).admin();
  await admin.connect();
  try {
    const broker0 = brokerCpu(cfg);
    const child = spawn('java', ['-Xms512m', '-Xmx1g', '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn', '-jar', jar, cfg.kafka.brokers.join(','), cfg.kafka.rawTopic, appId, String(f.streamsThreads), stateDir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[streams] ${d}`));
    const d = await timeDrain(child, total, f.timeout, async () => {
      const [t] = await admin.fetchOffsets({ groupId: appId, topics: [cfg.kafka.rawTopic] });
      return t.partitions.reduce((a, p) => a + Math.max(0, Number(p.offset)), 0);
    });
    if (d.exitedEarly) throw new Error(`the Kafka Streams peer exited (${d.exitedEarly}) while draining`);
    const brokerSec = brokerCpu(cfg) - broker0;
    const code = await stop(child);
    out(`kafka streams (${f.streamsThreads} threads, exactly_once_v2): ${Math.round(d.rate).toLocaleString('en-US')} messages/s over ${d.drainSec.toFixed(1)} s (start-up ${d.startupSec.toFixed(1)} s), peak RSS ${Math.round(d.peakRssMiB)} MiB, CPU ${d.cpuSec.toFixed(1)} s, exit ${code}`);
    out(`  ${perCore(total, d.cpuSec, 0, brokerSec, 'its RocksDB (in the JVM)')}`);
  } finally {
    if (!f.keepData) {
      const internal = (await admin.listTopics()).filter((t) => t.startsWith(`${appId}-`));
      if (internal.length) await admin.deleteTopics({ topics: internal }).catch(() => {});
      await admin.deleteGroups([appId]).catch(() => {});
    }
    await admin.disconnect();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

async function run(f: Flags): Promise<void> {
  const id = `bench.cu${randomBytes(3).toString('hex')}`;
  const env: Record<string, string> = {
    ...isolationEnv(id, f.partitions),
    // Every day of the backlog is inside the speed retention (nothing is dropped as late).
    SPEED_RETENTION_MS: String(Math.ceil(f.days + 1) * DAY),
  };
  const cfg = loadConfig({ ...process.env, ...env });
  await ensureTopics(kafkaClient(cfg, `${id}-setup`), cfg);
  const redis = redisClient(cfg);
  out(`# catch-up benchmark ${id}: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, load ${os.loadavg()[0].toFixed(1)}`);
  try {
    const filled = await fill(cfg, f);
    out(`backlog: ${filled.messages.toLocaleString('en-US')} messages (${(filled.bytes / 2 ** 20).toFixed(0)} MiB) over ${filled.spanDays.toFixed(2)} days of event time, ${f.partitions} partitions, produced in ${filled.seconds.toFixed(1)} s`);

    if (f.layers.includes('speed')) {
      const port = await freePort();
      const broker0 = brokerCpu(cfg);
      const child = start('speed', 'speed-layer/main.ts', { ...env, SPEED_HOST: '127.0.0.1', SPEED_PORT: String(port), ...envPairs(f.speedEnv) }, ['--no-alerts'], f.cpuProf);
      const d = await timeDrain(child, filled.messages, f.timeout, async () => Object.values(await readOffsets(redis, cfg)).reduce((a, b) => a + b, 0));
      if (d.exitedEarly) throw new Error(`the speed layer exited (${d.exitedEarly}) while draining`);
      const m = await scrape(`http://127.0.0.1:${port}/metrics`);
      const code = await stop(child);
      const args = hist(m, 'speed_step_args');
      const keys = hist(m, 'speed_step_keys');
      const bytes = hist(m, 'speed_step_bytes');
      const msgs = hist(m, 'speed_step_messages');
      const secs = hist(m, 'speed_batch_apply_seconds');
      out(`speed layer: ${Math.round(d.rate).toLocaleString('en-US')} messages/s over ${d.drainSec.toFixed(1)} s (start-up ${d.startupSec.toFixed(1)} s), peak RSS ${Math.round(d.peakRssMiB)} MiB (${Math.round(d.startRssMiB)} MiB at the first applied step), CPU ${d.cpuSec.toFixed(1)} s, Redis CPU ${d.redisCpuSec.toFixed(1)} s, failed steps ${metricSum(m, 'speed_apply_failures_total')}, exit ${code}`);
      out(`  steps: ${args.count} (${(filled.messages / Math.max(1, args.count)).toFixed(0)} messages each on average; p50 ${msgs.p50.toFixed(0)})`);
      out(`  args per step: mean ${args.mean.toFixed(0)}, p50 ${args.p50.toFixed(0)}, p99 ${args.p99.toFixed(0)}, all <= ${args.maxBound}`);
      out(`  keys per step: mean ${keys.mean.toFixed(0)}, p50 ${keys.p50.toFixed(0)}, p99 ${keys.p99.toFixed(0)}, all <= ${keys.maxBound}`);
      out(`  bytes per step: mean ${(bytes.mean / 1024).toFixed(0)} KiB, p99 ${(bytes.p99 / 1024).toFixed(0)} KiB, all <= ${(bytes.maxBound / 1024).toFixed(0)} KiB`);
      out(`  fold + Redis step: mean ${(secs.mean * 1000).toFixed(1)} ms, p99 ${(secs.p99 * 1000).toFixed(0)} ms`);
      out(`  ${perCore(filled.messages, d.cpuSec, d.redisCpuSec, brokerCpu(cfg) - broker0, 'Redis')}`);
    }

    if (f.layers.includes('streams')) await drainStreams(cfg, id, f, filled.messages);

    if (f.layers.includes('lake')) {
      const port = await freePort();
      await ensureBucket(s3Client(cfg), cfg.s3.bucket);
      const child = start('lake', 'batch-layer/lake-writer/main.ts', { ...env, LAKE_WRITER_HOST: '127.0.0.1', LAKE_WRITER_PORT: String(port), ...envPairs(f.lakeEnv) }, [], f.cpuProf);
      const admin = kafkaClient(cfg, `${id}-lake-progress`).admin();
      await admin.connect();
      try {
        const d = await timeDrain(child, filled.messages, f.timeout, async () => {
          const [t] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [cfg.kafka.rawTopic] });
          return t.partitions.reduce((a, p) => a + Math.max(0, Number(p.offset)), 0);
        });
        if (d.exitedEarly) throw new Error(`the lake writer exited (${d.exitedEarly}) while draining`);
        const m = await scrape(`http://127.0.0.1:${port}/metrics`);
        const code = await stop(child);
        const objects = (await listObjects(s3Client(cfg), cfg.s3.bucket, 'raw/events/')).filter((o) => o.key.endsWith('.parquet'));
        const largest = objects.reduce((a, o) => Math.max(a, o.size), 0);
        const total = objects.reduce((a, o) => a + o.size, 0);
        const rows = hist(m, 'lake_writer_object_rows');
        out(`lake writer: ${Math.round(d.rate).toLocaleString('en-US')} messages/s over ${d.drainSec.toFixed(1)} s to the last commit (99 % committed after ${d.drain99Sec.toFixed(1)} s; start-up ${d.startupSec.toFixed(1)} s), peak RSS ${Math.round(d.peakRssMiB)} MiB (${Math.round(d.startRssMiB)} MiB at the first commit), CPU ${d.cpuSec.toFixed(1)} s, exit ${code}`);
        out(`  objects: ${objects.length} (${(total / 2 ** 20).toFixed(1)} MiB), largest ${(largest / 2 ** 20).toFixed(2)} MiB, rows per object mean ${rows.mean.toFixed(0)}, upload failures ${metricSum(m, 'lake_writer_upload_failures_total')}`);
      } finally {
        await admin.disconnect();
      }
    }
  } finally {
    if (!f.keepData) {
      let cursor = '0';
      do {
        const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', speedKeys(cfg).glob(), 'COUNT', 1000);
        cursor = nextCursor;
        if (keys.length) await redis.unlink(...keys);
      } while (cursor !== '0');
      const admin = kafkaClient(cfg, `${id}-cleanup`).admin();
      await admin.connect();
      await admin.deleteTopics({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] }).catch(() => {});
      await admin.deleteGroups([cfg.kafka.speedGroup, cfg.kafka.lakeGroup]).catch(() => {});
      await admin.disconnect();
      const s3 = s3Client(cfg);
      const keys = (await listObjects(s3, cfg.s3.bucket, '').catch(() => [])).map((o) => o.key);
      if (keys.length) await deleteObjects(s3, cfg.s3.bucket, keys);
      out(`cleaned up ${id}`);
    }
    redis.disconnect();
  }
}

function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be an integer >= 1`);
    return n;
  };
}

const collect = (v: string, prev: string[]) => [...prev, v];

const program = new Command('bench-catchup')
  .description('Time the speed layer and the lake writer draining a backlog spread over days of event time (issue 17).')
  .option('--events <n>', 'about this many messages in the backlog (whole simulated users: a little more)', int('--events'), 500_000)
  .option('--days <d>', 'days of event time the backlog spans', (v) => {
    const n = Number(v);
    if (!(n >= 0.1 && n <= 6)) throw new InvalidArgumentError('--days must be in [0.1, 6] (the topic keeps 7 days)');
    return n;
  }, 3.5)
  .option('--layers <list>', 'which consumers to time, in order: speed, lake, and streams (the Kafka Streams peer, built with Maven on first use)', (v) => v.split(',').map((s) => s.trim()), ['speed', 'lake'])
  .option('--partitions <n>', 'partitions of the bench topic', int('--partitions'), 6)
  .option('--speed-env <KEY=VALUE>', 'extra environment for the speed layer (repeatable)', collect, [])
  .option('--lake-env <KEY=VALUE>', 'extra environment for the lake writer (repeatable)', collect, [])
  .option('--timeout <s>', 'give up on a layer after this many seconds', int('--timeout'), 600)
  .option('--streams-threads <n>', 'stream threads of the Kafka Streams peer', int('--streams-threads'), 2)
  .option('--keep-data', 'keep the bench topics, Redis keys and bucket', false)
  .option('--cpu-prof <dir>', 'write V8 CPU profiles of the layers under <dir>/<layer> (summarize with bench/ingest.ts profile)')
  .showHelpAfterError()
  .parse();

await run(program.opts<Flags>());
