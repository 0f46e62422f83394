/**
 * End-to-end ingestion benchmark (issue 3 §4):
 *
 *   load generator ──HTTP──> collector ──> Kafka ──> speed layer ──> Redis
 *   (child process)          (child)       (broker)   (child, ×N)
 *
 * at rising offered rates, each for a bounded duration, until it saturates.
 * Per step: offered vs sustained events/s (accepted by the collector, applied in
 * Redis), freshness p50/p95/p99 (collector accept → visible in Redis, from the
 * speed layer's `speed_freshness_seconds` histogram), CPU seconds and peak RSS
 * of every process (from /proc), the broker's and Redis' CPU, the machine load.
 *
 *   npx tsx bench/ingest.ts run --help
 *   npx tsx bench/ingest.ts run                               # 5k … 120k events/s, 20 s each
 *   npx tsx bench/ingest.ts run --rates 20000,40000 --duration 10 --cpu-prof .scratch/prof
 *   npx tsx bench/ingest.ts loadgen                           # the load generator alone (stub server)
 *   npx tsx bench/ingest.ts profile .scratch/prof/*.cpuprofile  # top self time of CPU profiles
 *
 * Loopback only. Uses its own topics (bench.<id>.events.raw/dlq), consumer
 * group and Redis key prefix, and removes them at the end (unless --keep-data).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { kafkaClient, redisClient } from '../common/clients';
import { loadConfig, REPO_ROOT, type Config } from '../common/config';
import { ensureTopics } from '../common/topics';
import { simulate } from '../ingestion/simulator/generate';
import { envPairs, findPid, freePort } from './support';

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
  url: string;
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
    const u = new URL('/v1/events', req.url);
    const agent = new http.Agent({ keepAlive: true, maxSockets: req.concurrency });
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
    agent.destroy();
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
  drain: number;
  warmup: number;
  batchSize: number;
  concurrency: number;
  users: number;
  bodies: number;
  duplicates: number;
  invalid: number;
  partitions: number;
  speedProcesses: number;
  cpuProf?: string;
  collectorEnv: string[];
  speedEnv: string[];
  alerts: boolean;
  catchup?: number;
  keepGoing: boolean;
  keepData: boolean;
  json?: string;
}

interface StepResult {
  offered: number;
  load: LoadStats;
  acceptedPerSec: number;
  appliedPerSec: number;
  drainSec: number | null;
  freshness: { p50: number | null; p95: number | null; p99: number | null; count: number };
  applyBatches: number;
  applyMeanMs: number | null;
  produceSends: number;
  produceMeanMs: number | null;
  produceMeanMsgs: number | null;
  cpu: Record<string, { cpuSec: number; cores: number; peakRssMiB: number }>;
  machineBusyCores: number;
  loadAvg: [number, number];
  saturated: string | null;
}

async function runLadder(f: RunFlags): Promise<void> {
  const id = `bench.${randomBytes(3).toString('hex')}`;
  const benchEnv: Record<string, string> = {
    TOPIC_RAW: `${id}.events.raw`,
    TOPIC_DLQ: `${id}.events.dlq`,
    TOPIC_RAW_PARTITIONS: String(f.partitions),
    SPEED_GROUP: `${id}.speed`,
    REDIS_KEY_PREFIX: `${id.replace('.', ':')}:`,
  };
  const cfg: Config = loadConfig({ ...process.env, ...benchEnv });
  await ensureTopics(kafkaClient(cfg, `${id}-setup`), cfg);
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`# ingest benchmark ${id}: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}, load ${loadAvg()}`);
  out(`topic ${cfg.kafka.rawTopic} (${f.partitions} partitions), group ${cfg.kafka.speedGroup}, prefix ${cfg.redis.keyPrefix}, ${f.speedProcesses} speed process(es)`);

  // One directory per process: the tsx loader's worker thread writes a profile of its own beside the main thread's.
  const nodeArgs = (name: string) => (f.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(f.cpuProf, `${id}-${name}`)}`] : []);
  if (f.cpuProf) fs.mkdirSync(f.cpuProf, { recursive: true });
  const collectorPort = await freePort();
  const collector: Child = {
    name: 'collector',
    port: collectorPort,
    proc: startTs('collector', 'ingestion/collector/main.ts', { ...benchEnv, COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: String(collectorPort), ...envPairs(f.collectorEnv) }, nodeArgs('collector')),
  };
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
  const loadgen = await LoadGen.start({ users: f.users, batchSize: f.batchSize, bodies: f.bodies, duplicates: f.duplicates, invalid: f.invalid, seed: 7 });
  out(`load generator: ${loadgen.info.bodies} bodies, ${loadgen.info.events} events, ${(loadgen.info.bytes / 2 ** 20).toFixed(1)} MiB pre-generated in ${loadgen.info.genMs} ms`);

  const redis = redisClient(cfg);
  const results: StepResult[] = [];
  try {
    await waitHealthy(`http://127.0.0.1:${collector.port}/health`, 60_000, collector.proc);
    for (const s of speeds) await waitHealthy(`http://127.0.0.1:${s.port}/health`, 60_000, s.proc);

    const collectorUrl = `http://127.0.0.1:${collector.port}`;
    if (f.catchup) {
      // The speed layer alone: fill the topic first (collector at full speed, no consumer), then time the drain.
      const fill = await loadgen.run({ url: collectorUrl, apiKey: cfg.collector.apiKeys[0], rate: 0, durationSec: f.catchup, concurrency: f.concurrency });
      out(`filled: ${fill.accepted.toLocaleString('en-US')} events accepted in ${fill.seconds.toFixed(1)} s (${Math.round(fill.accepted / fill.seconds).toLocaleString('en-US')}/s, the collector alone at full speed; collector CPU ${(procSample(collector.proc.pid!)?.cpuSec ?? 0).toFixed(1)} s since start)`);
      const t0 = performance.now();
      await startSpeeds();
      for (const s of speeds) await waitHealthy(`http://127.0.0.1:${s.port}/health`, 60_000, s.proc);
      const kafkaPid = findPid('kafka.Kafka', 'server.properties');
      const redisPid = findPid('redis-server', `:${cfg.stack.redisPort}`);
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
      collector: await scrape(`${collectorUrl}/metrics`),
      speed: await Promise.all(speeds.map((s) => scrape(`http://127.0.0.1:${s.port}/metrics`))),
    });
    const acceptedTotal = (m: Awaited<ReturnType<typeof scrapeAll>>) => sumMetric([m.collector], 'collector_events_accepted_total');
    const consumedTotal = (m: Awaited<ReturnType<typeof scrapeAll>>) => sumMetric(m.speed, 'speed_events_consumed_total');
    const waitDrained = async (maxSec: number): Promise<number | null> => {
      const t0 = performance.now();
      for (;;) {
        const m = await scrapeAll();
        if (consumedTotal(m) >= acceptedTotal(m)) return (performance.now() - t0) / 1000;
        if (performance.now() - t0 > maxSec * 1000) return null;
        await sleep(200);
      }
    };

    // Warm-up: JIT, connections, the group's assignment; not reported.
    const warm = await loadgen.run({ url: collectorUrl, apiKey: cfg.collector.apiKeys[0], rate: Math.min(5000, f.rates[0]), durationSec: f.warmup, concurrency: f.concurrency });
    const warmDrain = await waitDrained(60);
    out(`warm-up: ${warm.accepted} events accepted, drained ${warmDrain === null ? 'NOT within 60 s' : `in ${warmDrain.toFixed(1)} s`}`);

    const procs = () => {
      const list: Array<{ name: string; pid: number | null }> = [
        { name: 'loadgen', pid: loadgen.proc.pid ?? null },
        { name: 'collector', pid: collector.proc.pid ?? null },
        ...speeds.map((s) => ({ name: s.name, pid: s.proc.pid ?? null })),
        { name: 'kafka', pid: findPid('kafka.Kafka', 'server.properties') },
        { name: 'redis', pid: findPid('redis-server', `:${cfg.stack.redisPort}`) },
      ];
      return list.filter((p): p is { name: string; pid: number } => p.pid !== null);
    };

    out('');
    out('| offered ev/s | sent ev/s | accepted ev/s | applied ev/s | drain s | fresh p50 / p95 / p99 ms | HTTP p50 / p99 ms | 429 / 503 | loadgen / collector / speed / kafka / redis CPU (cores) | machine busy cores (others) | load 1m | saturated |');
    out('|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|---|');
    for (const rate of f.rates) {
      const ps = procs();
      for (const p of ps) resetPeak(p.pid);
      const cpu0 = new Map(ps.map((p) => [p.name, procSample(p.pid)]));
      const mc0 = machineCpu();
      const load0 = loadAvg();
      const m0 = await scrapeAll();
      const tStart = performance.now();
      const load = await loadgen.run({ url: collectorUrl, apiKey: cfg.collector.apiKeys[0], rate, durationSec: f.duration, concurrency: f.concurrency });
      const stepSec = (performance.now() - tStart) / 1000;
      const m1 = await scrapeAll();
      const cpu1 = new Map(ps.map((p) => [p.name, procSample(p.pid)]));
      const mc1 = machineCpu();
      const load1 = loadAvg();
      const drainSec = await waitDrained(f.drain);
      const m2 = await scrapeAll();

      const fresh = histDiff(histogram(m0.speed, 'speed_freshness_seconds'), histogram(m2.speed, 'speed_freshness_seconds'));
      const ms = (v: number | null) => (v === null ? null : Math.round(v * 1000));
      const applyCount = sumMetric(m1.speed, 'speed_batch_apply_seconds_count') - sumMetric(m0.speed, 'speed_batch_apply_seconds_count');
      const applySum = sumMetric(m1.speed, 'speed_batch_apply_seconds_sum') - sumMetric(m0.speed, 'speed_batch_apply_seconds_sum');
      const okOnly = (l: string) => l.includes('outcome="ok"');
      const prodCount = sumMetric([m1.collector], 'collector_produce_latency_seconds_count', okOnly) - sumMetric([m0.collector], 'collector_produce_latency_seconds_count', okOnly);
      const prodSum = sumMetric([m1.collector], 'collector_produce_latency_seconds_sum', okOnly) - sumMetric([m0.collector], 'collector_produce_latency_seconds_sum', okOnly);
      const prodMsgs = sumMetric([m1.collector], 'collector_produce_batch_messages_sum') - sumMetric([m0.collector], 'collector_produce_batch_messages_sum');
      const cpu: StepResult['cpu'] = {};
      for (const p of ps) {
        const a = cpu0.get(p.name);
        const b = cpu1.get(p.name);
        if (a && b) cpu[p.name] = { cpuSec: Number((b.cpuSec - a.cpuSec).toFixed(2)), cores: Number(((b.cpuSec - a.cpuSec) / stepSec).toFixed(2)), peakRssMiB: Math.round(b.hwmMiB) };
      }
      const r: StepResult = {
        offered: rate,
        load,
        acceptedPerSec: Math.round((acceptedTotal(m1) - acceptedTotal(m0)) / stepSec),
        appliedPerSec: Math.round((consumedTotal(m1) - consumedTotal(m0)) / stepSec),
        drainSec: drainSec === null ? null : Number(drainSec.toFixed(1)),
        freshness: { p50: ms(quantile(fresh, 0.5)), p95: ms(quantile(fresh, 0.95)), p99: ms(quantile(fresh, 0.99)), count: fresh.length ? fresh[fresh.length - 1][1] : 0 },
        applyBatches: applyCount,
        applyMeanMs: applyCount > 0 ? Number(((applySum / applyCount) * 1000).toFixed(1)) : null,
        produceSends: prodCount,
        produceMeanMs: prodCount > 0 ? Number(((prodSum / prodCount) * 1000).toFixed(1)) : null,
        produceMeanMsgs: prodCount > 0 ? Math.round(prodMsgs / prodCount) : null,
        cpu,
        machineBusyCores: Number(((mc1.busy - mc0.busy) / (mc1.total - mc0.total) * os.cpus().length).toFixed(2)),
        loadAvg: [load0, load1],
        saturated: null,
      };
      const why: string[] = [];
      if (r.acceptedPerSec < 0.95 * rate) why.push('collector below offered');
      if (r.appliedPerSec < 0.95 * r.acceptedPerSec) why.push('speed layer below accepted');
      if (r.drainSec === null) why.push(`backlog not drained in ${f.drain} s`);
      if (r.freshness.p95 === null || r.freshness.p95 >= 1000) why.push('p95 freshness ≥ 1 s');
      r.saturated = why.length ? why.join('; ') : null;
      results.push(r);
      const c = (n: string) => (cpu[n] ? cpu[n].cores.toFixed(2) : '–');
      const speedCores = speeds.map((s) => c(s.name)).join('+');
      out(
        `| ${rate.toLocaleString('en-US')} | ${Math.round(load.sentEvents / load.seconds).toLocaleString('en-US')} | ${r.acceptedPerSec.toLocaleString('en-US')} | ${r.appliedPerSec.toLocaleString('en-US')} | ${r.drainSec ?? `>${f.drain}`} | ${r.freshness.p50} / ${r.freshness.p95} / ${r.freshness.p99} | ${load.latencyP50Ms} / ${load.latencyP99Ms} | ${load.status429} / ${load.status503} | ${c('loadgen')} / ${c('collector')} / ${speedCores} / ${c('kafka')} / ${c('redis')} | ${r.machineBusyCores} (${Math.max(0, r.machineBusyCores - Object.values(cpu).reduce((n, v) => n + v.cores, 0)).toFixed(2)}) | ${load0.toFixed(1)}→${load1.toFixed(1)} | ${r.saturated ?? 'no'} |`,
      );
      if (r.saturated && !f.keepGoing) break;
    }
    out('');
    for (const r of results) {
      const accepted = r.acceptedPerSec * f.duration;
      const rss = Object.entries(r.cpu).map(([n, v]) => `${n} ${v.cpuSec}s=${accepted > 0 ? ((v.cpuSec / accepted) * 1e6).toFixed(1) : '–'}µs/ev/${v.peakRssMiB}MiB`).join(', ');
      out(`${r.offered}: CPU s = µs per accepted event / peak RSS: ${rss}; Redis steps ${r.applyBatches} (mean ${r.applyMeanMs} ms); Kafka sends ${r.produceSends} (mean ${r.produceMeanMs} ms, ${r.produceMeanMsgs} msgs); loadgen behind ${r.load.behind}`);
    }
    const ok = results.filter((r) => !r.saturated);
    const best = ok.length ? ok[ok.length - 1] : null;
    const firstBad = results.find((r) => r.saturated);
    out('');
    out(`highest unsaturated step: ${best ? `${best.offered.toLocaleString('en-US')} events/s offered, ${best.appliedPerSec.toLocaleString('en-US')} applied/s, p95 freshness ${best.freshness.p95} ms` : 'none'}`);
    if (firstBad) out(`saturation at ${firstBad.offered.toLocaleString('en-US')} events/s: ${firstBad.saturated} (accepted ${firstBad.acceptedPerSec.toLocaleString('en-US')}/s, applied ${firstBad.appliedPerSec.toLocaleString('en-US')}/s)`);
    if (f.json) fs.writeFileSync(f.json, JSON.stringify({ id, flags: f, machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version }, pool: loadgen.info, results }, null, 2));
  } finally {
    await loadgen.stop().catch(() => {});
    await stopChild(collector.proc);
    await Promise.all(speeds.map((s) => stopChild(s.proc)));
    if (!f.keepData) {
      let n = 0;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${cfg.redis.keyPrefix}*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length) n += await redis.unlink(...keys);
      } while (cursor !== '0');
      const admin = kafkaClient(cfg, `${id}-cleanup`).admin();
      await admin.connect();
      await admin.deleteTopics({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] }).catch(() => {});
      await admin.deleteGroups([cfg.kafka.speedGroup]).catch(() => {});
      await admin.disconnect();
      out(`cleaned up: ${n} Redis keys, topics and group ${id}`);
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
    const st = await g.run({ url: `http://127.0.0.1:${port}`, apiKey: 'x', rate, durationSec: f.duration, concurrency: f.concurrency });
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
  const program = new Command('bench-ingest').description('End-to-end ingestion benchmark: simulator → collector → Kafka → speed layer → Redis (issue 3 §4).').showHelpAfterError();
  program
    .command('run', { isDefault: true })
    .description('the rising-rate ladder against a collector and speed layer started as child processes')
    .option('--rates <list>', 'offered events/s per step', ints('--rates'), [5000, 10_000, 20_000, 40_000, 80_000, 120_000])
    .option('--duration <s>', 'seconds per step', int('--duration'), 20)
    .option('--drain <s>', 'after a step, wait at most this long for the speed layer to catch up', int('--drain'), 30)
    .option('--warmup <s>', 'unreported warm-up seconds (at min(5k, first rate))', int('--warmup'), 5)
    .option('--batch-size <n>', 'events per HTTP request (NDJSON)', int('--batch-size'), 1000)
    .option('--concurrency <n>', 'HTTP requests in flight at most', int('--concurrency'), 32)
    .option('--users <n>', 'simulated users', int('--users'), 20_000)
    .option('--bodies <n>', 'distinct pre-generated request bodies (event ids get a per-pass prefix)', int('--bodies'), 200)
    .option('--duplicates <f>', 'fraction of events resent with the same event_id', frac('--duplicates'), 0.01)
    .option('--invalid <f>', 'extra invalid events per valid one (dead-lettered)', frac('--invalid'), 0.001)
    .option('--partitions <n>', 'partitions of the bench topic', int('--partitions'), 6)
    .option('--speed-processes <n>', 'speed-layer processes in the consumer group', int('--speed-processes'), 1)
    .option('--cpu-prof <dir>', 'write V8 CPU profiles of the collector and the speed layer(s) here')
    .option('--collector-env <KEY=VALUE>', 'extra environment for the collector (repeatable)', collect, [])
    .option('--speed-env <KEY=VALUE>', 'extra environment for the speed layer (repeatable)', collect, [])
    .option('--no-alerts', 'do not run the alert evaluator in the (first) speed process')
    .option('--catchup <s>', 'instead of the ladder: fill the topic for <s> seconds at full collector speed with no consumer, then time the speed layer draining it', int('--catchup'))
    .option('--keep-going', 'continue the ladder after the first saturated step', false)
    .option('--keep-data', 'keep the bench topics and Redis keys', false)
    .option('--json <file>', 'also write the results as JSON')
    .addHelpText('after', `
A step is "saturated" when accepted < 95 % of offered, applied < 95 % of accepted,
the backlog does not drain within --drain, or p95 freshness ≥ 1 s.
Freshness = now − received_at when the event's batch became visible in Redis
(the speed layer's histogram, diffed over the step and its drain).
CPU = utime+stime from /proc/<pid>/stat over the step; peak RSS = VmHWM (reset per step).`)
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
