/**
 * End-to-end ingestion benchmark (issue 3 §4, issue 12 §1): the real pipeline,
 *
 *   load generator ──HTTP──> collector ──> Kafka ─┬─> speed layer ──> Redis
 *   (child process)          (child)      (broker) └─> lake writer ──> MinIO
 *                                                     (children; --no-lake: speed only)
 *
 * at rising offered rates, each for a bounded duration, until a step is not clean.
 * Per step: offered, accepted, applied (Redis) and lake-written events/s; freshness
 * p50/p95/p99 (collector accept → visible in Redis, the speed layer's
 * `speed_freshness_seconds`); each consumer group's lag (committed offsets against the
 * topics' end offsets) through the step and its drain time after it; CPU µs per
 * event and peak RSS of every process, the broker, Redis and MinIO included (from
 * /proc); the speed layer's Redis memory per event of the dedupe window.
 *
 *   npx tsx bench/ingest.ts run --help
 *   npx tsx bench/ingest.ts run                               # 5k … 120k events/s, 20 s each
 *   npx tsx bench/ingest.ts run --rates 20000,40000 --duration 10 --cpu-prof .scratch/prof
 *   npx tsx bench/ingest.ts loadgen                           # the load generator alone (stub server)
 *   npx tsx bench/ingest.ts profile .scratch/prof/*.cpuprofile  # top self time of CPU profiles
 *
 * Loopback only. Uses its own topics (bench.<id>.events.raw/dlq), consumer groups,
 * Redis key prefix and bucket, and removes them at the end (unless --keep-data).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import type { Redis } from 'ioredis';
import { kafkaClient, redisClient, s3Client } from '../common/clients';
import { loadConfig, REPO_ROOT, type Config } from '../common/config';
import { speedKeys } from '../common/speed-keys';
import { ensureBucket, ensureTopics } from '../common/topics';
import { simulate } from '../ingestion/simulator/generate';
import { envPairs, freePort, groupLags, isolationEnv, removeBucket, stackPids } from './support';

const SELF = fileURLToPath(import.meta.url);
const DAY = 86_400_000;
const TICKS = 100; // getconf CLK_TCK on Linux

// ---------------------------------------------------------------------------
// /proc readers

interface ProcSample {
  cpuSec: number;
  rssMiB: number;
  hwmMiB: number;
}

function procSample(pid: number): ProcSample | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    const cpuSec = (Number(fields[11]) + Number(fields[12])) / TICKS;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
    return { cpuSec, rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

/** Reset a process' peak RSS (VmHWM) to its current RSS, so the next reading is the peak of one step. */
function resetPeak(pid: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    /* not ours or not permitted: the peak then covers the process' life */
  }
}

/** Busy and total jiffies of the whole machine. */
function machineCpu(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

function loadAvg(): number {
  return Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

// ---------------------------------------------------------------------------
// Prometheus text

type Metrics = Map<string, number>;

async function scrape(url: string): Promise<Metrics> {
  const text = await (await fetch(url)).text();
  const m: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

function sumMetric(ms: Metrics[], name: string, labelFilter?: (labels: string) => boolean): number {
  let s = 0;
  for (const m of ms) {
    for (const [k, v] of m) {
      const brace = k.indexOf('{');
      const n = brace === -1 ? k : k.slice(0, brace);
      if (n !== name) continue;
      if (labelFilter && !labelFilter(brace === -1 ? '' : k.slice(brace))) continue;
      s += v;
    }
  }
  return s;
}

/** Cumulative histogram buckets (le → count), summed over processes. */
function histogram(ms: Metrics[], name: string): Array<[number, number]> {
  const acc = new Map<number, number>();
  for (const m of ms) {
    for (const [k, v] of m) {
      if (!k.startsWith(`${name}_bucket{`)) continue;
      const le = /le="([^"]+)"/.exec(k)![1];
      const bound = le === '+Inf' ? Infinity : Number(le);
      acc.set(bound, (acc.get(bound) ?? 0) + v);
    }
  }
  return [...acc.entries()].sort((a, b) => a[0] - b[0]);
}

function histDiff(a: Array<[number, number]>, b: Array<[number, number]>): Array<[number, number]> {
  const before = new Map(a);
  return b.map(([le, n]) => [le, n - (before.get(le) ?? 0)]);
}

/** Quantile of a cumulative histogram, linearly interpolated inside its bucket (Prometheus' histogram_quantile). */
function quantile(h: Array<[number, number]>, q: number): number | null {
  const total = h.length > 0 ? h[h.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of h) {
    if (n >= rank) {
      if (le === Infinity) return prevLe; // beyond the last finite bucket: a lower bound
      return prevLe + ((le - prevLe) * (rank - prevN)) / Math.max(1, n - prevN);
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

// ---------------------------------------------------------------------------
// Processes

interface Child {
  name: string;
  proc: ChildProcess;
  port: number;
}

function startTs(name: string, script: string, env: Record<string, string>, nodeArgs: string[], args: string[] = []): ChildProcess {
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(REPO_ROOT, script), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr!.on('data', (d: Buffer) => process.stderr.write(`[${name}] ${d}`));
  return proc;
}

async function waitHealthy(url: string, timeoutMs: number, child: ChildProcess): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${url}: process exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not yet */
    }
    await sleep(250);
  }
  throw new Error(`${url} not healthy within ${timeoutMs} ms`);
}

async function stopChild(c: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
  await done;
  clearTimeout(t);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------
// Load generator (runs in its own process: `fork(SELF)` with BENCH_ROLE=loadgen)

interface PoolOptions {
  users: number;
  batchSize: number;
  bodies: number;
  duplicates: number;
  invalid: number;
  seed: number;
}

/**
 * A pre-generated body with holes: the event_id prefix (per pass over the pool,
 * so ids never repeat across passes while the simulator's own duplicates stay
 * duplicates) and the timestamp (the send time: live traffic).
 */
interface Template {
  parts: string[];
  holes: Uint8Array; // 0 = id prefix, 1 = timestamp
  events: number;
}

function buildPool(o: PoolOptions): { templates: Template[]; bytes: number } {
  const start = Math.floor(Date.now() / DAY) * DAY - 30 * DAY;
  const gen = simulate({ seed: o.seed, users: o.users, startMs: start, endMs: start + 30 * DAY, duplicateFraction: o.duplicates, invalidFraction: o.invalid });
  const templates: Template[] = [];
  let bytes = 0;
  let lines: string[] = [];
  let templatable: boolean[] = [];
  const flush = () => {
    const parts: string[] = [];
    const holes: number[] = [];
    let cur = '';
    lines.forEach((line, i) => {
      if (i > 0) cur += '\n';
      const idAt = line.indexOf('"event_id":"');
      const tsM = /"timestamp":(\d+)/.exec(line);
      if (!templatable[i] || idAt === -1 || tsM === null) {
        cur += line; // invalid sends go out as generated: their defect is the point
        return;
      }
      const idEnd = idAt + '"event_id":"'.length;
      const tsStart = tsM.index + '"timestamp":'.length;
      const tsEnd = tsStart + tsM[1].length;
      const cuts: Array<[number, number, number]> = [
        [idEnd, idEnd, 0],
        [tsStart, tsEnd, 1],
      ].sort((a, b) => a[0] - b[0]) as Array<[number, number, number]>;
      let p = 0;
      for (const [s, e, kind] of cuts) {
        cur += line.slice(p, s);
        parts.push(cur);
        holes.push(kind);
        cur = '';
        p = e;
      }
      cur += line.slice(p);
    });
    parts.push(cur);
    templates.push({ parts, holes: Uint8Array.from(holes), events: lines.length });
    bytes += parts.reduce((n, s) => n + s.length, 0) + holes.length * 14;
    lines = [];
    templatable = [];
  };
  for (const s of gen) {
    lines.push(s.line);
    templatable.push(s.kind === 'valid' || s.kind === 'duplicate');
    if (lines.length === o.batchSize) {
      flush();
      if (templates.length === o.bodies) break;
    }
  }
  if (lines.length > 0) flush();
  return { templates, bytes };
}

function render(t: Template, prefix: string, ts: string): string {
  const { parts, holes } = t;
  let s = parts[0];
  for (let i = 0; i < holes.length; i++) s += (holes[i] === 0 ? prefix : ts) + parts[i + 1];
  return s;
}

interface RunRequest {
  type: 'run';
  /** Collector base URLs; requests go round-robin (what a load balancer in front of several collectors does). */
  urls: string[];
  apiKey: string;
  /** Events/s; 0 = as fast as answers come back. */
  rate: number;
  durationSec: number;
  concurrency: number;
}

export interface LoadStats {
  offeredRate: number;
  sentEvents: number;
  sentRequests: number;
  accepted: number;
  rejected: number;
  status429: number;
  status503: number;
  otherErrors: number;
  /** Requests issued more than 100 ms after their schedule (the generator or the concurrency limit fell behind). */
  behind: number;
  seconds: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
}

async function loadgenRole(): Promise<void> {
  const o = JSON.parse(process.env.BENCH_POOL!) as PoolOptions;
  const t0 = performance.now();
  const pool = buildPool(o);
  process.send!({ type: 'ready', bodies: pool.templates.length, events: pool.templates.reduce((n, t) => n + t.events, 0), bytes: pool.bytes, genMs: Math.round(performance.now() - t0) });
  let pass = 0;
  let next = 0;
  const runId = randomBytes(3).toString('hex');
  process.on('message', (msg: RunRequest | { type: 'exit' }) => {
    if (msg.type === 'exit') process.exit(0);
    void runLoad(msg).then((stats) => process.send!({ type: 'done', stats }));
  });

  async function runLoad(req: RunRequest): Promise<LoadStats> {
    const targets = req.urls.map((url) => ({ u: new URL('/v1/events', url), agent: new http.Agent({ keepAlive: true, maxSockets: req.concurrency }) }));
    let turn = 0;
    const stats: LoadStats = { offeredRate: req.rate, sentEvents: 0, sentRequests: 0, accepted: 0, rejected: 0, status429: 0, status503: 0, otherErrors: 0, behind: 0, seconds: 0, latencyP50Ms: 0, latencyP99Ms: 0 };
    const latencies: number[] = [];
    const start = performance.now();
    const end = start + req.durationSec * 1000;
    let inFlight = 0;
    let scheduled = 0; // events whose send time has been reached
    let wake: (() => void) | undefined;

    const post = (): void => {
      const t = pool.templates[next++];
      if (next === pool.templates.length) {
        next = 0;
        pass++;
      }
      const body = render(t, `${runId}p${pass}_`, String(Date.now()));
      const sentAt = performance.now();
      const { u, agent } = targets[turn++ % targets.length];
      inFlight++;
      stats.sentRequests++;
      stats.sentEvents += t.events;
      const r = http.request(
        { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson', 'x-api-key': req.apiKey, 'content-length': Buffer.byteLength(body), 'x-bench-events': String(t.events) } },
        (res) => {
          let head = '';
          res.setEncoding('latin1');
          res.on('data', (chunk: string) => {
            if (head.length < 64) head += chunk.slice(0, 64);
          });
          res.on('end', () => {
            latencies.push(performance.now() - sentAt);
            if (res.statusCode === 200) {
              const m = /"accepted":(\d+),"rejected":(\d+)/.exec(head);
              stats.accepted += Number(m?.[1] ?? 0);
              stats.rejected += Number(m?.[2] ?? 0);
            } else if (res.statusCode === 429) stats.status429++;
            else if (res.statusCode === 503) stats.status503++;
            else stats.otherErrors++;
            inFlight--;
            wake?.();
          });
        },
      );
      r.on('error', () => {
        stats.otherErrors++;
        inFlight--;
        wake?.();
      });
      r.end(body);
    };

    for (;;) {
      const now = performance.now();
      if (now >= end) break;
      if (req.rate === 0) {
        while (inFlight < req.concurrency) post();
      } else {
        const due = Math.floor(((now - start) / 1000) * req.rate);
        while (scheduled < due && inFlight < req.concurrency) {
          const bodyDueAt = start + (scheduled / req.rate) * 1000;
          if (now - bodyDueAt > 100) stats.behind++;
          scheduled += pool.templates[next].events;
          post();
        }
      }
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, req.rate === 0 ? 50 : 2);
      });
      wake = undefined;
    }
    while (inFlight > 0) await new Promise<void>((r) => ((wake = r), setTimeout(r, 20)));
    stats.seconds = (performance.now() - start) / 1000;
    for (const t of targets) t.agent.destroy();
    latencies.sort((a, b) => a - b);
    stats.latencyP50Ms = Math.round(latencies[Math.floor(latencies.length * 0.5)] ?? 0);
    stats.latencyP99Ms = Math.round(latencies[Math.floor(latencies.length * 0.99)] ?? 0);
    return stats;
  }
}

/** A collector stand-in that answers at once (for measuring the load generator alone). */
function stubRole(): void {
  const port = Number(process.env.BENCH_STUB_PORT);
  http
    .createServer((req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        const n = Number(req.headers['x-bench-events'] ?? 0);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`{"accepted":${n},"rejected":0,"results":[]}`);
      });
    })
    .listen(port, '127.0.0.1', () => process.send!({ type: 'listening' }));
}

class LoadGen {
  readonly proc: ChildProcess;
  info!: { bodies: number; events: number; bytes: number; genMs: number };
  private constructor(pool: PoolOptions) {
    this.proc = fork(SELF, [], { env: { ...process.env, BENCH_ROLE: 'loadgen', BENCH_POOL: JSON.stringify(pool) }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  }
  static async start(pool: PoolOptions): Promise<LoadGen> {
    const g = new LoadGen(pool);
    g.info = await new Promise((resolve, reject) => {
      g.proc.once('message', (m: { type: string } & LoadGen['info']) => resolve(m));
      g.proc.once('exit', (code) => reject(new Error(`load generator exited with ${code}`)));
    });
    return g;
  }
  run(req: Omit<RunRequest, 'type'>): Promise<LoadStats> {
    return new Promise((resolve) => {
      const on = (m: { type: string; stats: LoadStats }) => {
        if (m.type !== 'done') return;
        this.proc.off('message', on);
        resolve(m.stats);
      };
      this.proc.on('message', on);
      this.proc.send({ type: 'run', ...req });
    });
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const done = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.send({ type: 'exit' });
    await done;
  }
}

// ---------------------------------------------------------------------------
// The ladder

interface RunFlags {
  rates: number[];
  duration: number;
  drain?: number;
  warmup: number;
  batchSize: number;
  concurrency: number;
  users: number;
  bodies: number;
  duplicates: number;
  invalid: number;
  partitions: number;
  speedProcesses: number;
  collectors: number;
  lake: boolean;
  cpuProf?: string;
  collectorEnv: string[];
  speedEnv: string[];
  lakeEnv: string[];
  alerts: boolean;
  catchup?: number;
  keepGoing: boolean;
  keepData: boolean;
  json?: string;
}

/** Seconds of accepted traffic the speed group may be behind without falling behind (a batch in flight per partition). */
const SPEED_HOLD_BACK_SEC = 2;
/** The lake writer holds up to LAKE_ROLL_AGE_SEC of traffic in open files by design, plus this for encoding and upload. */
const LAKE_UPLOAD_SLACK_SEC = 15;
/** Processes whose work for a step's events continues into its drain: their CPU per event counts both. */
const UPLOADS_AFTER_STEP = new Set(['lake', 'minio']);

/** Lag (messages not yet committed) of one consumer group through a step. */
interface GroupStep {
  peakFirstHalf: number;
  peakSecondHalf: number;
  atEnd: number;
  /** What the group may be behind by design: its hold-back in seconds × accepted/s. */
  holdBack: number;
  /** Seconds after the load stopped until its lag was 0; null when not within the drain limit. */
  drainSec: number | null;
  /** Why its lag is not bounded, or null. */
  unbounded: string | null;
}

interface ProcStep {
  /** CPU seconds during the step, and during the drain after it. */
  cpuSec: number;
  drainCpuSec: number;
  /** Cores used during the step. */
  cores: number;
  /**
   * CPU per event accepted in the step: of the step (the figure of issue 3), but of step + drain for the
   * lake writer and MinIO, which encode and upload the step's last files after it.
   */
  usPerEvent: number | null;
  /** VmHWM over step + drain. */
  peakRssMiB: number;
}

interface StepResult {
  offered: number;
  load: LoadStats;
  acceptedPerSec: number;
  appliedPerSec: number;
  /** Lake writer: records consumed and rows in uploaded objects per second of the step; null with --no-lake. */
  lakeConsumedPerSec: number | null;
  lakeWrittenPerSec: number | null;
  /** Objects uploaded during step + drain, and failed attempts (retried). */
  lakeObjects: number | null;
  lakeUploadFailures: number | null;
  freshness: { p50: number | null; p95: number | null; p99: number | null; count: number };
  lag: { speed: GroupStep; lake: GroupStep | null };
  /** Until both groups' lag was 0 after the load stopped; null when one did not drain within its limit. */
  drainSec: number | null;
  applyBatches: number;
  applyMeanMs: number | null;
  produceSends: number;
  produceMeanMs: number | null;
  produceMeanMsgs: number | null;
  cpu: Record<string, ProcStep>;
  redis: {
    /** used_memory after the drain minus before the step. */
    usedMemoryDeltaBytes: number;
    /** The speed layer's dedupe sets after the drain: MEMORY USAGE and members (= events in the window). */
    dedupeKeys: number;
    dedupeEvents: number;
    dedupeBytes: number;
    dedupeBytesPerEvent: number | null;
  };
  machineBusyCores: number;
  loadAvg: [number, number];
  /** Why the step is not clean (joined with '; '), or null when it is. */
  saturated: string | null;
}

/** Lag samples of the consumer groups, every `everyMs`, until stopped. */
function sampleLag(read: () => Promise<number[]>, everyMs: number): { stop(): Promise<Array<{ t: number; lags: number[] }>> } {
  const samples: Array<{ t: number; lags: number[] }> = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = performance.now();
      const lags = await read().catch(() => null);
      if (lags) samples.push({ t, lags });
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return samples;
    },
  };
}

/** A group's lag is bounded when it stays under its hold-back and, over a step longer than twice that, does not grow from the first half to the second. */
function groupStep(name: string, lags: Array<{ t: number; lag: number }>, tStart: number, tEnd: number, acceptedPerSec: number, holdBackSec: number, drainSec: number | null): GroupStep {
  const mid = (tStart + tEnd) / 2;
  const peak = (xs: typeof lags) => xs.reduce((m, x) => Math.max(m, x.lag), 0);
  const first = peak(lags.filter((x) => x.t < mid));
  const second = peak(lags.filter((x) => x.t >= mid));
  const holdBack = Math.round(acceptedPerSec * holdBackSec);
  const slack = acceptedPerSec * Math.max(1, 0.1 * holdBackSec);
  let unbounded: string | null = null;
  if (Math.max(first, second) > holdBack) unbounded = `${name} lag peaked at ${count(Math.max(first, second))} (> ${holdBackSec} s of traffic)`;
  else if ((tEnd - tStart) / 1000 >= 2 * holdBackSec && second > first + slack) unbounded = `${name} lag grew (${count(first)} → ${count(second)})`;
  return { peakFirstHalf: first, peakSecondHalf: second, atEnd: lags.length ? lags[lags.length - 1].lag : 0, holdBack, drainSec: drainSec === null ? null : Number(drainSec.toFixed(1)), unbounded };
}

const num = (n: number) => n.toLocaleString('en-US');
/** 950, 12k, 1.5M: a count that fits a narrow column. */
function count(n: number): string {
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return `${n < 1e4 ? (n / 1e3).toFixed(1) : Math.round(n / 1e3)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

async function redisMemory(redis: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await redis.info('memory'))?.[1] ?? 0);
}

/** The speed layer's dedupe sets: their memory (MEMORY USAGE, sampled as Redis does by default) and members. */
async function dedupeMemory(redis: Redis, cfg: Config): Promise<{ keys: number; events: number; bytes: number }> {
  const r = { keys: 0, events: 0, bytes: 0 };
  for await (const keys of redis.scanStream({ match: speedKeys(cfg).glob('dedup'), count: 1000 }) as AsyncIterable<string[]>) {
    for (const key of keys) {
      const [bytes, members] = await Promise.all([redis.call('MEMORY', 'USAGE', key) as Promise<number | null>, redis.scard(key)]);
      r.keys++;
      r.bytes += bytes ?? 0;
      r.events += members;
    }
  }
  return r;
}

async function runLadder(f: RunFlags): Promise<void> {
  const id = `bench.${randomBytes(3).toString('hex')}`;
  const lake = f.lake && !f.catchup;
  const benchEnv = isolationEnv(id, f.partitions);
  const cfg: Config = loadConfig({ ...process.env, ...benchEnv });
  const lakeCfg: Config = loadConfig({ ...process.env, ...benchEnv, ...envPairs(f.lakeEnv) });
  const lakeHoldBackSec = lakeCfg.lake.rollAgeSec + LAKE_UPLOAD_SLACK_SEC;
  const speedDrainMax = f.drain ?? 30;
  const lakeDrainMax = f.drain ?? lakeCfg.lake.rollAgeSec + 30;
  await ensureTopics(kafkaClient(cfg, `${id}-setup`), cfg);
  if (lake) await ensureBucket(s3Client(cfg), cfg.s3.bucket);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`# ingest benchmark ${id}: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}, load ${loadAvg()}`);
  out(`topic ${cfg.kafka.rawTopic} (${f.partitions} partitions), prefix ${cfg.redis.keyPrefix}, ${f.collectors} collector(s), ${f.speedProcesses} speed process(es), group ${cfg.kafka.speedGroup}`);
  if (lake) {
    out(`lake writer: group ${cfg.kafka.lakeGroup}, bucket ${cfg.s3.bucket}, roll at ${lakeCfg.lake.rollAgeSec} s or ${(lakeCfg.lake.rollBytes / 2 ** 20).toFixed(0)} MiB`);
    if (f.duration < 2 * lakeHoldBackSec) out(`note: steps shorter than ${2 * lakeHoldBackSec} s (twice the lake's hold-back) cannot show its lag growing nor its steady-state memory`);
  } else out('lake writer: not running (--no-lake)');

  // One directory per process: the tsx loader's worker thread writes a profile of its own beside the main thread's.
  const nodeArgs = (name: string) => (f.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(f.cpuProf, `${id}-${name}`)}`] : []);
  if (f.cpuProf) fs.mkdirSync(f.cpuProf, { recursive: true });
  const collectors: Child[] = [];
  for (let i = 0; i < f.collectors; i++) {
    const port = await freePort();
    const name = `collector${f.collectors > 1 ? i + 1 : ''}`;
    collectors.push({
      name,
      port,
      proc: startTs(name, 'ingestion/collector/main.ts', { ...benchEnv, COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: String(port), ...envPairs(f.collectorEnv) }, nodeArgs(name)),
    });
  }
  const speeds: Child[] = [];
  const startSpeeds = async () => {
    for (let i = 0; i < f.speedProcesses; i++) {
      const port = await freePort();
      speeds.push({
        name: `speed${f.speedProcesses > 1 ? i + 1 : ''}`,
        port,
        proc: startTs(`speed${i + 1}`, 'speed-layer/main.ts', { ...benchEnv, SPEED_HOST: '127.0.0.1', SPEED_PORT: String(port), ...envPairs(f.speedEnv) }, nodeArgs(`speed${i + 1}`), f.alerts && i === 0 ? [] : ['--no-alerts']),
      });
    }
  };
  if (!f.catchup) await startSpeeds();
  let lakeWriter: Child | null = null;
  if (lake) {
    const port = await freePort();
    lakeWriter = { name: 'lake', port, proc: startTs('lake', 'batch-layer/lake-writer/main.ts', { ...benchEnv, LAKE_WRITER_HOST: '127.0.0.1', LAKE_WRITER_PORT: String(port), ...envPairs(f.lakeEnv) }, nodeArgs('lake')) };
  }
  const loadgen = await LoadGen.start({ users: f.users, batchSize: f.batchSize, bodies: f.bodies, duplicates: f.duplicates, invalid: f.invalid, seed: 7 });
  out(`load generator: ${loadgen.info.bodies} bodies, ${loadgen.info.events} events, ${(loadgen.info.bytes / 2 ** 20).toFixed(1)} MiB pre-generated in ${loadgen.info.genMs} ms`);

  const redis = redisClient(cfg);
  const admin = kafkaClient(cfg, `${id}-lag`).admin();
  await admin.connect();
  const results: StepResult[] = [];
  try {
    for (const c of collectors) await waitHealthy(`http://127.0.0.1:${c.port}/health`, 60_000, c.proc);
    for (const s of speeds) await waitHealthy(`http://127.0.0.1:${s.port}/health`, 60_000, s.proc);
    if (lakeWriter) await waitHealthy(`http://127.0.0.1:${lakeWriter.port}/health`, 60_000, lakeWriter.proc);

    const collectorUrls = collectors.map((c) => `http://127.0.0.1:${c.port}`);
    if (f.catchup) {
      // The speed layer alone: fill the topic first (collector at full speed, no consumer), then time the drain.
      const fill = await loadgen.run({ urls: collectorUrls, apiKey: cfg.collector.apiKeys[0], rate: 0, durationSec: f.catchup, concurrency: f.concurrency });
      out(`filled: ${fill.accepted.toLocaleString('en-US')} events accepted in ${fill.seconds.toFixed(1)} s (${Math.round(fill.accepted / fill.seconds).toLocaleString('en-US')}/s, the collector alone at full speed; collector CPU ${collectors.reduce((sum, c) => sum + (procSample(c.proc.pid!)?.cpuSec ?? 0), 0).toFixed(1)} s since start)`);
      const t0 = performance.now();
      await startSpeeds();
      for (const s of speeds) await waitHealthy(`http://127.0.0.1:${s.port}/health`, 60_000, s.proc);
      const { kafka: kafkaPid, redis: redisPid } = stackPids(cfg);
      const c0 = [...speeds.map((s) => procSample(s.proc.pid!)), kafkaPid ? procSample(kafkaPid) : null, redisPid ? procSample(redisPid) : null];
      const t1 = performance.now();
      let consumed = 0;
      for (;;) {
        const ms = await Promise.all(speeds.map((s) => scrape(`http://127.0.0.1:${s.port}/metrics`)));
        consumed = sumMetric(ms, 'speed_events_consumed_total');
        if (consumed >= fill.accepted || performance.now() - t1 > 300_000) break;
        await sleep(100);
      }
      const sec = (performance.now() - t1) / 1000;
      const c1 = [...speeds.map((s) => procSample(s.proc.pid!)), kafkaPid ? procSample(kafkaPid) : null, redisPid ? procSample(redisPid) : null];
      const cpu = c0.map((a, i) => (a && c1[i] ? c1[i]!.cpuSec - a.cpuSec : 0));
      const names = [...speeds.map((s) => s.name), 'kafka', 'redis'];
      out(`speed layer catch-up: ${consumed.toLocaleString('en-US')} events in ${sec.toFixed(1)} s = ${Math.round(consumed / sec).toLocaleString('en-US')} events/s (start-up ${((t1 - t0) / 1000).toFixed(1)} s not counted); CPU: ${names.map((n, i) => `${n} ${cpu[i].toFixed(1)} s = ${((cpu[i] / consumed) * 1e6).toFixed(1)} µs/event (${(cpu[i] / sec).toFixed(2)} cores)`).join(', ')}; load ${loadAvg()}`);
      return;
    }
    const scrapeAll = async () => ({
      collector: await Promise.all(collectorUrls.map((u) => scrape(`${u}/metrics`))),
      speed: await Promise.all(speeds.map((s) => scrape(`http://127.0.0.1:${s.port}/metrics`))),
      lake: lakeWriter ? await scrape(`http://127.0.0.1:${lakeWriter.port}/metrics`) : null,
    });
    type Scrape = Awaited<ReturnType<typeof scrapeAll>>;
    const acceptedTotal = (m: Scrape) => sumMetric(m.collector, 'collector_events_accepted_total');
    const consumedTotal = (m: Scrape) => sumMetric(m.speed, 'speed_events_consumed_total');
    const lakeTotal = (m: Scrape, name: string) => (m.lake ? sumMetric([m.lake], name) : 0);

    // The speed group reads events.raw; the lake group events.raw and events.dlq, and commits only what is in an uploaded object.
    const groups = [{ groupId: cfg.kafka.speedGroup, topics: [cfg.kafka.rawTopic] }, ...(lake ? [{ groupId: cfg.kafka.lakeGroup, topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] }] : [])];
    const readLag = () => groupLags(admin, groups);
    /** Seconds until each group's lag is 0 (null: not within its limit). */
    const waitDrained = async (maxSec: number[]): Promise<Array<number | null>> => {
      const t0 = performance.now();
      const done: Array<number | null | undefined> = groups.map(() => undefined);
      for (;;) {
        const lags = await readLag().catch(() => null);
        const sec = (performance.now() - t0) / 1000;
        groups.forEach((_, i) => {
          if (done[i] !== undefined) return;
          if (lags && lags[i] === 0) done[i] = sec;
          else if (sec > maxSec[i]) done[i] = null;
        });
        if (done.every((d) => d !== undefined)) return done as Array<number | null>;
        await sleep(250);
      }
    };
    const drainLimits = [speedDrainMax, ...(lake ? [lakeDrainMax] : [])];

    // Warm-up: JIT, connections, the groups' assignment; not reported. Both groups start the ladder at lag 0.
    const warm = await loadgen.run({ urls: collectorUrls, apiKey: cfg.collector.apiKeys[0], rate: Math.min(5000, f.rates[0]), durationSec: f.warmup, concurrency: f.concurrency });
    const warmDrain = await waitDrained(drainLimits.map((s) => Math.max(60, s)));
    out(`warm-up: ${warm.accepted} events accepted, drained ${warmDrain.map((d, i) => `${i === 0 ? 'speed' : 'lake'} ${d === null ? 'NOT within the limit' : `in ${d.toFixed(1)} s`}`).join(', ')}`);

    const procs = () => {
      const stack = stackPids(cfg);
      const list: Array<{ name: string; pid: number | null }> = [
        { name: 'loadgen', pid: loadgen.proc.pid ?? null },
        ...collectors.map((c) => ({ name: c.name, pid: c.proc.pid ?? null })),
        ...speeds.map((s) => ({ name: s.name, pid: s.proc.pid ?? null })),
        ...(lakeWriter ? [{ name: 'lake', pid: lakeWriter.proc.pid ?? null }] : []),
        { name: 'kafka', pid: stack.kafka },
        { name: 'redis', pid: stack.redis },
        // MinIO works for the lake writer alone: without it, its CPU is someone else's.
        ...(lake ? [{ name: 'minio', pid: stack.minio }] : []),
      ];
      return list.filter((p): p is { name: string; pid: number } => p.pid !== null);
    };
    /** Columns of the per-process tables: the speed processes summed into one. */
    const columns = ['loadgen', 'collector', 'speed', 'lake', 'kafka', 'redis', 'minio'];
    const column = (name: string) => (name.startsWith('speed') ? 'speed' : name.startsWith('collector') ? 'collector' : name);

    out('');
    out('| offered/s | accepted/s | applied/s | lake/s | fresh p50/95/99 ms | lag speed/lake | drain s | clean |');
    out('|---:|---:|---:|---:|---|---|---|---|');
    for (const rate of f.rates) {
      const ps = procs();
      for (const p of ps) resetPeak(p.pid);
      const cpu0 = new Map(ps.map((p) => [p.name, procSample(p.pid)]));
      const mem0 = await redisMemory(redis);
      const mc0 = machineCpu();
      const load0 = loadAvg();
      const m0 = await scrapeAll();
      const tStart = performance.now();
      const sampler = sampleLag(readLag, 500);
      const load = await loadgen.run({ urls: collectorUrls, apiKey: cfg.collector.apiKeys[0], rate, durationSec: f.duration, concurrency: f.concurrency });
      const tEnd = performance.now();
      const stepSec = (tEnd - tStart) / 1000;
      const samples = await sampler.stop();
      const m1 = await scrapeAll();
      const cpu1 = new Map(ps.map((p) => [p.name, procSample(p.pid)]));
      const mc1 = machineCpu();
      const load1 = loadAvg();
      const drains = await waitDrained(drainLimits);
      const m2 = await scrapeAll();
      const cpu2 = new Map(ps.map((p) => [p.name, procSample(p.pid)]));
      const mem2 = await redisMemory(redis);
      const dedupe = await dedupeMemory(redis, cfg);

      const accepted = acceptedTotal(m1) - acceptedTotal(m0);
      const acceptedPerSec = Math.round(accepted / stepSec);
      const fresh = histDiff(histogram(m0.speed, 'speed_freshness_seconds'), histogram(m2.speed, 'speed_freshness_seconds'));
      const ms = (v: number | null) => (v === null ? null : Math.round(v * 1000));
      const applyCount = sumMetric(m1.speed, 'speed_batch_apply_seconds_count') - sumMetric(m0.speed, 'speed_batch_apply_seconds_count');
      const applySum = sumMetric(m1.speed, 'speed_batch_apply_seconds_sum') - sumMetric(m0.speed, 'speed_batch_apply_seconds_sum');
      const okOnly = (l: string) => l.includes('outcome="ok"');
      const prodCount = sumMetric(m1.collector, 'collector_produce_latency_seconds_count', okOnly) - sumMetric(m0.collector, 'collector_produce_latency_seconds_count', okOnly);
      const prodSum = sumMetric(m1.collector, 'collector_produce_latency_seconds_sum', okOnly) - sumMetric(m0.collector, 'collector_produce_latency_seconds_sum', okOnly);
      const prodMsgs = sumMetric(m1.collector, 'collector_produce_batch_messages_sum') - sumMetric(m0.collector, 'collector_produce_batch_messages_sum');
      const cpu: StepResult['cpu'] = {};
      for (const p of ps) {
        const [a, b, c] = [cpu0.get(p.name), cpu1.get(p.name), cpu2.get(p.name)];
        if (!a || !b || !c) continue;
        const until = UPLOADS_AFTER_STEP.has(p.name) ? c : b;
        cpu[p.name] = {
          cpuSec: Number((b.cpuSec - a.cpuSec).toFixed(2)),
          drainCpuSec: Number((c.cpuSec - b.cpuSec).toFixed(2)),
          cores: Number(((b.cpuSec - a.cpuSec) / stepSec).toFixed(2)),
          usPerEvent: accepted > 0 ? Number((((until.cpuSec - a.cpuSec) / accepted) * 1e6).toFixed(1)) : null,
          peakRssMiB: Math.round(c.hwmMiB),
        };
      }
      const lagOf = (i: number) => samples.map((s) => ({ t: s.t, lag: s.lags[i] }));
      const drainSec = drains.some((d) => d === null) ? null : Math.max(...(drains as number[]));
      const r: StepResult = {
        offered: rate,
        load,
        acceptedPerSec,
        appliedPerSec: Math.round((consumedTotal(m1) - consumedTotal(m0)) / stepSec),
        lakeConsumedPerSec: lake ? Math.round((lakeTotal(m1, 'lake_writer_records_total') - lakeTotal(m0, 'lake_writer_records_total')) / stepSec) : null,
        lakeWrittenPerSec: lake ? Math.round((lakeTotal(m1, 'lake_writer_object_rows_sum') - lakeTotal(m0, 'lake_writer_object_rows_sum')) / stepSec) : null,
        lakeObjects: lake ? lakeTotal(m2, 'lake_writer_objects_total') - lakeTotal(m0, 'lake_writer_objects_total') : null,
        lakeUploadFailures: lake ? lakeTotal(m2, 'lake_writer_upload_failures_total') - lakeTotal(m0, 'lake_writer_upload_failures_total') : null,
        freshness: { p50: ms(quantile(fresh, 0.5)), p95: ms(quantile(fresh, 0.95)), p99: ms(quantile(fresh, 0.99)), count: fresh.length ? fresh[fresh.length - 1][1] : 0 },
        lag: {
          speed: groupStep('speed', lagOf(0), tStart, tEnd, acceptedPerSec, SPEED_HOLD_BACK_SEC, drains[0]),
          lake: lake ? groupStep('lake', lagOf(1), tStart, tEnd, acceptedPerSec, lakeHoldBackSec, drains[1]) : null,
        },
        drainSec: drainSec === null ? null : Number(drainSec.toFixed(1)),
        applyBatches: applyCount,
        applyMeanMs: applyCount > 0 ? Number(((applySum / applyCount) * 1000).toFixed(1)) : null,
        produceSends: prodCount,
        produceMeanMs: prodCount > 0 ? Number(((prodSum / prodCount) * 1000).toFixed(1)) : null,
        produceMeanMsgs: prodCount > 0 ? Math.round(prodMsgs / prodCount) : null,
        cpu,
        redis: { usedMemoryDeltaBytes: mem2 - mem0, dedupeKeys: dedupe.keys, dedupeEvents: dedupe.events, dedupeBytes: dedupe.bytes, dedupeBytesPerEvent: dedupe.events > 0 ? Number((dedupe.bytes / dedupe.events).toFixed(1)) : null },
        machineBusyCores: Number((((mc1.busy - mc0.busy) / (mc1.total - mc0.total)) * os.cpus().length).toFixed(2)),
        loadAvg: [load0, load1],
        saturated: null,
      };
      const why: string[] = [];
      if (r.acceptedPerSec < 0.95 * rate) why.push('collector below offered');
      if (r.appliedPerSec < 0.95 * r.acceptedPerSec) why.push('speed layer below accepted');
      if (r.freshness.p95 === null || r.freshness.p95 >= 1000) why.push('p95 freshness ≥ 1 s');
      for (const [name, g, limit] of [['speed', r.lag.speed, speedDrainMax], ['lake', r.lag.lake, lakeDrainMax]] as const) {
        if (!g) continue;
        if (g.unbounded) why.push(g.unbounded);
        if (g.drainSec === null) why.push(`${name} backlog not drained in ${limit} s`);
      }
      r.saturated = why.length ? why.join('; ') : null;
      results.push(r);
      const lagCell = `${count(Math.max(r.lag.speed.peakFirstHalf, r.lag.speed.peakSecondHalf))} / ${r.lag.lake ? count(Math.max(r.lag.lake.peakFirstHalf, r.lag.lake.peakSecondHalf)) : '–'}`;
      const drainCell = drains.map((d, i) => (d === null ? `>${drainLimits[i]}` : d.toFixed(1))).join(' / ');
      out(
        `| ${num(rate)} | ${num(r.acceptedPerSec)} | ${num(r.appliedPerSec)} | ${r.lakeWrittenPerSec === null ? '–' : num(r.lakeWrittenPerSec)} | ${r.freshness.p50} / ${r.freshness.p95} / ${r.freshness.p99} | ${lagCell} | ${drainCell} | ${r.saturated ? 'no' : 'yes'} |`,
      );
      if (r.saturated && !f.keepGoing) break;
    }

    const perColumn = (r: StepResult, pick: (p: ProcStep) => number | null) => {
      const acc = new Map<string, number>();
      for (const [name, p] of Object.entries(r.cpu)) {
        const v = pick(p);
        if (v !== null) acc.set(column(name), (acc.get(column(name)) ?? 0) + v);
      }
      return acc;
    };
    out('');
    out('CPU µs per accepted event (lake, minio: step + drain), machine cores busy during the step:');
    out('');
    out(`| offered/s | ${columns.join(' | ')} | total | cores (others) | load 1m |`);
    out(`|---:|${columns.map(() => '---:|').join('')}---:|---:|---|`);
    for (const r of results) {
      const us = perColumn(r, (p) => p.usPerEvent);
      const others = Math.max(0, r.machineBusyCores - Object.values(r.cpu).reduce((n, v) => n + v.cores, 0));
      const total = [...us.values()].reduce((a, b) => a + b, 0);
      out(`| ${num(r.offered)} | ${columns.map((c) => (us.has(c) ? us.get(c)!.toFixed(1) : '–')).join(' | ')} | ${total.toFixed(1)} | ${r.machineBusyCores} (${others.toFixed(2)}) | ${r.loadAvg[0].toFixed(1)}→${r.loadAvg[1].toFixed(1)} |`);
    }
    out('');
    out("Peak RSS MiB (step + drain), the speed layer's Redis memory:");
    out('');
    out(`| offered/s | ${columns.join(' | ')} | dedupe B/ev | Redis Δ MiB |`);
    out(`|---:|${columns.map(() => '---:|').join('')}---:|---:|`);
    for (const r of results) {
      const rss = perColumn(r, (p) => p.peakRssMiB);
      out(`| ${num(r.offered)} | ${columns.map((c) => (rss.has(c) ? String(rss.get(c)) : '–')).join(' | ')} | ${r.redis.dedupeBytesPerEvent ?? '–'} | ${(r.redis.usedMemoryDeltaBytes / 2 ** 20).toFixed(1)} |`);
    }
    out('');
    for (const r of results) {
      out(`${num(r.offered)}/s: HTTP p50/p99 ${r.load.latencyP50Ms}/${r.load.latencyP99Ms} ms, 429 ${r.load.status429}, 503 ${r.load.status503}, loadgen behind ${r.load.behind}; Kafka sends ${r.produceSends} (mean ${r.produceMeanMs} ms, ${r.produceMeanMsgs} msgs)`);
      out(`  Redis steps ${r.applyBatches} (mean ${r.applyMeanMs} ms); dedupe ${num(r.redis.dedupeEvents)} events in ${r.redis.dedupeKeys} sets${r.lakeObjects === null ? '' : `; lake consumed ${num(r.lakeConsumedPerSec!)}/s, ${r.lakeObjects} objects, ${r.lakeUploadFailures} failed uploads`}`);
      if (r.saturated) out(`  not clean: ${r.saturated}`);
    }
    const ok = results.filter((r) => !r.saturated);
    const best = ok.length ? ok[ok.length - 1] : null;
    const firstBad = results.find((r) => r.saturated);
    out('');
    out(`highest clean step: ${best ? `${num(best.offered)} events/s offered, ${num(best.appliedPerSec)} applied/s, p95 freshness ${best.freshness.p95} ms` : 'none'}`);
    if (firstBad) out(`first step not clean: ${num(firstBad.offered)} events/s: ${firstBad.saturated}`);
    if (f.json) {
      fs.mkdirSync(path.dirname(path.resolve(f.json)), { recursive: true });
      fs.writeFileSync(f.json, JSON.stringify({ id, flags: f, machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version }, lake: lake ? { rollAgeSec: lakeCfg.lake.rollAgeSec, rollBytes: lakeCfg.lake.rollBytes, holdBackSec: lakeHoldBackSec } : null, pool: loadgen.info, results }, null, 2));
    }
  } finally {
    await loadgen.stop().catch(() => {});
    await Promise.all(collectors.map((c) => stopChild(c.proc)));
    await Promise.all(speeds.map((s) => stopChild(s.proc)));
    // Its stop flushes open files and waits for their upload (up to 60 s).
    if (lakeWriter) await stopChild(lakeWriter.proc, 70_000);
    await admin.disconnect().catch(() => {});
    if (!f.keepData) {
      let n = 0;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', speedKeys(cfg).glob(), 'COUNT', 1000);
        cursor = next;
        if (keys.length) n += await redis.unlink(...keys);
      } while (cursor !== '0');
      const cleanup = kafkaClient(cfg, `${id}-cleanup`).admin();
      await cleanup.connect();
      await cleanup.deleteTopics({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] }).catch(() => {});
      await cleanup.deleteGroups([cfg.kafka.speedGroup, ...(lake ? [cfg.kafka.lakeGroup] : [])]).catch(() => {});
      await cleanup.disconnect();
      const objects = lake ? await removeBucket(s3Client(cfg), cfg.s3.bucket).catch((err: Error) => (out(`could not remove bucket ${cfg.s3.bucket}: ${err.message}`), 0)) : 0;
      out(`cleaned up: ${n} Redis keys, topics and groups ${id}${lake ? `, bucket ${cfg.s3.bucket} (${objects} objects)` : ''}`);
    }
    redis.disconnect();
    if (f.cpuProf) out(`CPU profiles in ${f.cpuProf}/${id}-* (summarize: npx tsx bench/ingest.ts profile ${f.cpuProf}/${id}-*/*.cpuprofile; the largest file of each directory is the main thread)`);
  }
}

// ---------------------------------------------------------------------------
// The load generator alone

async function runLoadgenAlone(f: { rates: number[]; duration: number; batchSize: number; concurrency: number; users: number; bodies: number }): Promise<void> {
  const port = await freePort();
  const stub = fork(SELF, [], { env: { ...process.env, BENCH_ROLE: 'stub', BENCH_STUB_PORT: String(port) }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise((r) => stub.once('message', r));
  const g = await LoadGen.start({ users: f.users, batchSize: f.batchSize, bodies: f.bodies, duplicates: 0.01, invalid: 0.001, seed: 7 });
  process.stdout.write(`load generator: ${g.info.events} events in ${g.info.bodies} bodies (${(g.info.bytes / 2 ** 20).toFixed(1)} MiB) pre-generated in ${g.info.genMs} ms\n`);
  process.stdout.write('| offered ev/s | sent ev/s | MiB/s | HTTP p50 / p99 ms | behind | loadgen CPU (cores) | stub CPU (cores) |\n|---:|---:|---:|---|---:|---:|---:|\n');
  for (const rate of f.rates) {
    const a = procSample(g.proc.pid!);
    const s = procSample(stub.pid!);
    const st = await g.run({ urls: [`http://127.0.0.1:${port}`], apiKey: 'x', rate, durationSec: f.duration, concurrency: f.concurrency });
    const a2 = procSample(g.proc.pid!);
    const s2 = procSample(stub.pid!);
    const mib = (st.sentRequests * (g.info.bytes / g.info.bodies)) / 2 ** 20 / st.seconds;
    process.stdout.write(
      `| ${rate === 0 ? 'unpaced' : rate.toLocaleString('en-US')} | ${Math.round(st.sentEvents / st.seconds).toLocaleString('en-US')} | ${mib.toFixed(0)} | ${st.latencyP50Ms} / ${st.latencyP99Ms} | ${st.behind} | ${((a2!.cpuSec - a!.cpuSec) / st.seconds).toFixed(2)} | ${((s2!.cpuSec - s!.cpuSec) / st.seconds).toFixed(2)} |\n`,
    );
  }
  await g.stop();
  stub.kill('SIGTERM');
}

// ---------------------------------------------------------------------------
// CPU profile summary

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

function summarizeProfile(file: string, top: number): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const agg = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const fn = n.callFrame.functionName || '(anonymous)';
    if (fn === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    const url = n.callFrame.url.replace(`file://${REPO_ROOT}/`, '').replace(/^.*node_modules\//, '');
    const where = url ? `${url}:${n.callFrame.lineNumber + 1}` : '';
    const key = `${fn} ${where}`.trim();
    agg.set(key, (agg.get(key) ?? 0) + us);
  }
  const rows = [...agg.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = [`${path.basename(file)}: ${(total / 1e6).toFixed(1)} s busy, ${(idle / 1e6).toFixed(1)} s idle`];
  for (const [k, us] of rows) lines.push(`  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
  // By package / module: where the busy time lives.
  const byModule = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    if (n.callFrame.functionName === '(idle)') continue;
    const url = n.callFrame.url;
    const mod = url === '' ? `(native: ${n.callFrame.functionName || 'program'})` : url.includes('node_modules/') ? url.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*$/, '$1') : url.startsWith('node:') ? 'node:internals' : url.replace(`file://${REPO_ROOT}/`, '');
    byModule.set(mod, (byModule.get(mod) ?? 0) + us);
  }
  lines.push('  by module:');
  for (const [k, us] of [...byModule.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12)) lines.push(`  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// CLI

function ints(name: string) {
  return (v: string) => {
    const list = v.split(',').map((s) => Number(s.trim()));
    if (list.some((n) => !Number.isInteger(n) || n < 0)) throw new InvalidArgumentError(`${name} must be comma-separated integers >= 0`);
    return list;
  };
}
function int(name: string, min = 1) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}
function frac(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`${name} must be in [0, 1]`);
    return n;
  };
}
const collect = (v: string, prev: string[]) => [...prev, v];

async function main(): Promise<void> {
  const program = new Command('bench-ingest').description('End-to-end ingestion benchmark: simulator → collector → Kafka → speed layer → Redis and lake writer → MinIO (issue 3 §4, issue 12 §1).').showHelpAfterError();
  program
    .command('run', { isDefault: true })
    .description('the rising-rate ladder against a collector, speed layer and lake writer started as child processes')
    .option('--rates <list>', 'offered events/s per step', ints('--rates'), [5000, 10_000, 20_000, 40_000, 80_000, 120_000])
    .option('--duration <s>', 'seconds per step', int('--duration'), 20)
    .option('--drain <s>', 'after a step, wait at most this long for each group to catch up (default: 30 for the speed layer, LAKE_ROLL_AGE_SEC + 30 for the lake writer)', int('--drain'))
    .option('--warmup <s>', 'unreported warm-up seconds (at min(5k, first rate))', int('--warmup'), 5)
    .option('--batch-size <n>', 'events per HTTP request (NDJSON)', int('--batch-size'), 1000)
    .option('--concurrency <n>', 'HTTP requests in flight at most', int('--concurrency'), 32)
    .option('--users <n>', 'simulated users', int('--users'), 20_000)
    .option('--bodies <n>', 'distinct pre-generated request bodies (event ids get a per-pass prefix)', int('--bodies'), 200)
    .option('--duplicates <f>', 'fraction of events resent with the same event_id', frac('--duplicates'), 0.01)
    .option('--invalid <f>', 'extra invalid events per valid one (dead-lettered)', frac('--invalid'), 0.001)
    .option('--partitions <n>', 'partitions of the bench topic', int('--partitions'), 6)
    .option('--speed-processes <n>', 'speed-layer processes in the consumer group', int('--speed-processes'), 1)
    .option('--collectors <n>', 'collector processes; the load generator spreads requests over them round-robin', int('--collectors'), 1)
    .option('--no-lake', 'do not run the lake writer (the figures of issue 3: speed layer only)')
    .option('--cpu-prof <dir>', 'write V8 CPU profiles of the collector, the speed layer(s) and the lake writer here')
    .option('--collector-env <KEY=VALUE>', 'extra environment for the collector (repeatable)', collect, [])
    .option('--speed-env <KEY=VALUE>', 'extra environment for the speed layer (repeatable)', collect, [])
    .option('--lake-env <KEY=VALUE>', 'extra environment for the lake writer, e.g. LAKE_ROLL_AGE_SEC=10 (repeatable)', collect, [])
    .option('--no-alerts', 'do not run the alert evaluator in the (first) speed process')
    .option('--catchup <s>', 'instead of the ladder: fill the topic for <s> seconds at full collector speed with no consumer, then time the speed layer draining it (no lake writer)', int('--catchup'))
    .option('--keep-going', 'continue the ladder after the first step that is not clean', false)
    .option('--keep-data', 'keep the bench topics, groups, Redis keys and bucket', false)
    .option('--json <file>', 'also write every figure as JSON (e.g. bench-results/ingest.json)')
    .addHelpText('after', `
A step is clean when accepted ≥ 95 % of offered, applied ≥ 95 % of accepted,
p95 freshness < 1 s, and each consumer group's lag is bounded and drains after
the step. Bounded: the lag (messages not yet committed; the lake writer commits
only after upload) stays under the group's hold-back — 2 s of accepted traffic
for the speed layer, LAKE_ROLL_AGE_SEC + 15 s for the lake writer, which keeps
that much in open files by design — and, in a step longer than twice that, its
peak in the second half exceeds the first half's by at most 10 % of it (1 s at least).
Freshness = now − received_at when the event's batch became visible in Redis
(the speed layer's histogram, diffed over the step and its drain).
CPU µs/event = utime+stime from /proc/<pid>/stat over the step per event accepted
in it (lake writer and MinIO: over the step and its drain, when the step's last files
are uploaded); peak RSS = VmHWM over the step and its drain (reset per step).`)
    .action((f: RunFlags) => runLadder(f));
  program
    .command('loadgen')
    .description('the load generator alone, against a stub server that answers at once')
    .option('--rates <list>', 'offered events/s (0 = unpaced)', ints('--rates'), [50_000, 100_000, 200_000, 0])
    .option('--duration <s>', 'seconds per step', int('--duration'), 10)
    .option('--batch-size <n>', 'events per request', int('--batch-size'), 1000)
    .option('--concurrency <n>', 'requests in flight', int('--concurrency'), 32)
    .option('--users <n>', 'simulated users', int('--users'), 20_000)
    .option('--bodies <n>', 'pre-generated bodies', int('--bodies'), 200)
    .action((f) => runLoadgenAlone(f));
  program
    .command('profile')
    .description('top self-time functions of V8 .cpuprofile files')
    .argument('<files...>')
    .option('--top <n>', 'functions to list', int('--top'), 25)
    .action((files: string[], o: { top: number }) => {
      for (const file of files) process.stdout.write(`${summarizeProfile(file, o.top)}\n\n`);
    });
  await program.parseAsync(process.argv);
}

if (process.env.BENCH_ROLE === 'loadgen') await loadgenRole();
else if (process.env.BENCH_ROLE === 'stub') stubRole();
else
  await main().catch((err: Error) => {
    process.stderr.write(`bench-ingest: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
