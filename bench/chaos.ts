/**
 * The chaos run (issue 16 §2): the whole pipeline on a replicated stack of its own, under load,
 * while one component at a time is killed or stopped on a seeded schedule and restarted after a
 * pause. Measures recovery per failure kind and the collector's availability, then drains, runs
 * the daily batch through Temporal and checks that nothing accepted was lost or counted twice.
 *
 *   npx tsx bench/chaos.ts --duration 600 --rate 5000 [--seed 16] [--kinds broker-leader,redis,…]
 *
 * Event times are the send time minus one day, so the day they fall in is complete when the run
 * ends (its daily batch can run at once) and still inside the speed layer's 48 h retention.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Redis } from 'ioredis';
import { kafkaClient, redisClient, s3Client } from '../common/clients';
import { REPO_ROOT, type Config } from '../common/config';
import { ALL, BUCKET_MS, bucketStart } from '../common/contract';
import { dayId, lakePaths, type RunManifest } from '../common/lake';
import { getJson, listObjects, stageObjects } from '../common/lake-io';
import { countField, readCountBreakdown, readOffsets, readStats } from '../common/speed-keys';
import { Duck, sqlList } from '../batch-layer/jobs/duck';
import { hoursOfDay } from '../batch-layer/jobs';
import { HA_SERVICES, killService, startHaStack, type HaStack } from '../infra/ha-stack';
import { stackPaths } from '../infra/services';
import { status, up } from '../infra/stack';
import { connectClient } from '../workflows/client';
import { startBackfill } from '../workflows/cli/backfill';
import { FAILURE_KINDS, KIND_NAMES, availability, killOrder, rng, stats, type Attempt, type KindName, type Signal } from './chaos-plan';
import { envPairs, freePort } from './support';

const DAY = BUCKET_MS.day;
const INGEST_KEY = 'chaos-ingest-key';
const READ_KEY = 'chaos-read-key';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

interface Options {
  duration: number;
  rate: number;
  seed: number;
  kinds: KindName[];
  every: number;
  pause: number;
  batch: number;
  clients: number;
  invalid: number;
  out: string;
  keep: boolean;
  env: string[];
}

// ─────────────────────────────── the app's processes ───────────────────────────────

type AppName = 'collector' | 'speed' | 'lake' | 'worker' | 'serving';
const SCRIPTS: Record<AppName, string> = {
  collector: 'ingestion/collector/main.ts',
  speed: 'speed-layer/main.ts',
  lake: 'batch-layer/lake-writer/main.ts',
  worker: 'workflows/worker.ts',
  serving: 'serving-layer/main.ts',
};

/** One app process, restarted by us after a kill; an exit we did not cause is counted (a crash). */
class App {
  child: ChildProcess | null = null;
  starts = 0;
  unexpectedExits: Array<{ at: number; code: number | null; signal: string | null }> = [];
  private killing = false;
  constructor(
    readonly name: AppName,
    readonly port: number,
    private readonly env: Record<string, string>,
    private readonly logFile: string,
  ) {}

  start(): void {
    const out = fs.openSync(this.logFile, 'a');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, SCRIPTS[this.name])], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.starts++;
    this.killing = false;
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      if (this.killing) return;
      this.unexpectedExits.push({ at: Date.now(), code, signal });
      log(`${this.name} exited by itself (code ${code}, signal ${signal}); restarting in 1 s`);
      setTimeout(() => this.child === null && !stopping && this.start(), 1000);
    });
    this.child = child;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.killing = true;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await gone;
  }

  async healthy(): Promise<boolean> {
    return httpStatus(`http://127.0.0.1:${this.port}/health`).then((s) => s === 200);
  }
}

let stopping = false;
/** Probe events the collector accepted (they count in the day's total). */
let probesAccepted = 0;

async function httpStatus(url: string, headers: Record<string, string> = {}, timeoutMs = 3000): Promise<number> {
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

// ─────────────────────────────── the load ───────────────────────────────

/** Per event number: 0 not answered yet, 1 accepted, 2 rejected. Event ids are `<run>-<n>`. */
class Ledger {
  state: Uint8Array;
  minuteCounts = new Map<number, number>();
  accepted = 0;
  rejected = 0;
  constructor(capacity: number) {
    this.state = new Uint8Array(capacity);
  }
}

interface Batch {
  first: number;
  events: number;
  ts: number;
  body: string;
}

class Load {
  attempts: Attempt[] = [];
  /** Requests answered 200, in the order of their answers (recovery of `accept`). */
  okAnswers: Array<{ start: number; end: number }> = [];
  sent = 0;
  maxBacklog = 0;
  retries = 0;
  private queue: Batch[] = [];
  private next = 0;
  private stop = false;
  private done: Promise<void> | null = null;

  constructor(
    private readonly url: string,
    private readonly run: string,
    private readonly opts: Options,
    readonly ledger: Ledger,
  ) {}

  private makeBatch(now: number): Batch {
    const first = this.next;
    const n = this.opts.batch;
    this.next += n;
    const ts = now - DAY;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      const k = first + i;
      // A fixed share is invalid (an unknown event type): the collector rejects it to the DLQ.
      const invalid = (Math.imul(k, 2654435761) >>> 0) % 1000 < this.opts.invalid * 1000;
      lines.push(
        JSON.stringify({
          event_id: `${this.run}-${k}`,
          event_type: invalid ? 'chaos_unknown' : k % 3 === 0 ? 'page_view' : 'click',
          user_id: `user-${k % 4999}`,
          timestamp: ts - (i % 50),
          schema_version: 1,
          properties: { device_type: k % 2 ? 'web' : 'mobile' },
          context: { location: 'BR-SP' },
        }),
      );
    }
    return { first, events: n, ts, body: lines.join('\n') };
  }

  begin(): void {
    const perBatchMs = (1000 * this.opts.batch) / this.opts.rate;
    const t0 = Date.now();
    const producer = (async () => {
      let made = 0;
      while (!this.stop) {
        const due = Math.floor((Date.now() - t0) / perBatchMs);
        while (made < due && this.next + this.opts.batch <= this.ledger.state.length) {
          this.queue.push(this.makeBatch(Date.now()));
          made++;
        }
        this.maxBacklog = Math.max(this.maxBacklog, this.queue.length * this.opts.batch);
        await sleep(Math.max(5, perBatchMs / 2));
      }
    })();
    const clients = Array.from({ length: this.opts.clients }, () => this.client());
    this.done = Promise.all([producer, ...clients]).then(() => undefined);
  }

  /** Stop making batches; the clients finish the backlog (up to `drainMs`) and stop. */
  async end(drainMs: number): Promise<number> {
    this.stop = true;
    const deadline = Date.now() + drainMs;
    while (this.queue.length > 0 && Date.now() < deadline) await sleep(200);
    const left = this.queue.length;
    this.queue.length = 0;
    await this.done;
    return left;
  }

  private async client(): Promise<void> {
    for (;;) {
      const batch = this.queue.shift();
      if (!batch) {
        if (this.stop) return;
        await sleep(10);
        continue;
      }
      // A batch is sent until it is answered 200: a 503 or a lost connection stores nothing for
      // sure, and a resend is safe (the pipeline de-duplicates by event_id).
      let backoff = 100;
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) this.retries++;
        const start = Date.now();
        let status = 0;
        let retryAfter: number | null = null;
        try {
          const res = await fetch(`${this.url}/v1/events`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-ndjson', 'x-api-key': INGEST_KEY },
            body: batch.body,
            signal: AbortSignal.timeout(30_000),
          });
          status = res.status;
          const ra = res.headers.get('retry-after');
          retryAfter = ra === null ? null : Number(ra);
          if (status === 200) {
            const body = (await res.json()) as { results: Array<{ index: number; status: string }> };
            for (const r of body.results) {
              const k = batch.first + r.index;
              if (r.status === 'accepted') {
                this.ledger.state[k] = 1;
                this.ledger.accepted++;
                const m = bucketStart(batch.ts - (r.index % 50), 'minute');
                this.ledger.minuteCounts.set(m, (this.ledger.minuteCounts.get(m) ?? 0) + 1);
              } else {
                this.ledger.state[k] = 2;
                this.ledger.rejected++;
              }
            }
          } else {
            await res.body?.cancel();
          }
        } catch {
          status = 0;
        }
        this.attempts.push({ start, end: Date.now(), status });
        if (status === 200) {
          this.okAnswers.push({ start, end: Date.now() });
          this.sent += batch.events;
          break;
        }
        // Retry-After when the server gives one, else exponential backoff with jitter, capped at 5 s.
        const wait = retryAfter !== null && Number.isFinite(retryAfter) ? retryAfter * 1000 : backoff;
        backoff = Math.min(5000, backoff * 2);
        await sleep(wait * (0.75 + Math.random() * 0.5));
      }
    }
  }
}

// ─────────────────────────────── probes ───────────────────────────────

/** Times at which each signal was seen working, polled in the background. */
class Probes {
  /** API and worker: times a probe was answered 200. */
  seen: Record<'api' | 'worker', number[]> = { api: [], worker: [] };
  /** Speed and lake: each poll's time and counter (events applied, raw objects uploaded). */
  samples: Record<'speed' | 'lake', Array<{ t: number; v: number }>> = { speed: [], lake: [] };
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly cfg: Config,
    private readonly redis: Redis,
    private readonly apps: Record<AppName, App>,
    private readonly load: Load,
    private readonly day: () => string[],
  ) {}

  begin(): void {
    const every = (ms: number, fn: () => Promise<void>) => {
      let busy = false;
      this.timers.push(
        setInterval(() => {
          if (busy) return;
          busy = true;
          fn().finally(() => (busy = false));
        }, ms),
      );
    };
    const s3 = s3Client(this.cfg);
    every(500, async () => {
      const events = await readStats(this.redis, this.cfg).then((s) => s.events).catch(() => null);
      if (events !== null) this.samples.speed.push({ t: Date.now(), v: events });
    });
    every(1000, async () => {
      const counts = await Promise.all(this.day().map((d) => listObjects(s3, this.cfg.s3.bucket, lakePaths.rawDayPrefix(d)).then((o) => o.length))).catch(() => null);
      if (counts !== null) this.samples.lake.push({ t: Date.now(), v: counts.reduce((a, b) => a + b, 0) });
    });
    every(500, async () => {
      const t = Date.now();
      if ((await httpStatus(`http://127.0.0.1:${this.apps.serving.port}/v1/freshness`, { 'x-api-key': READ_KEY })) === 200) this.seen.api.push(t);
    });
    every(500, async () => {
      const t = Date.now();
      if (await this.apps.worker.healthy()) this.seen.worker.push(t);
    });
  }

  /**
   * The first time after `since` the signal was seen working: accept, a request started after it
   * answered 200; speed and lake, the counter grew past its first reading after `since` (a step or
   * an upload finished just before a kill must not count as recovery).
   */
  firstAfter(signal: Signal, since: number): number | null {
    if (signal === 'accept') return this.load.okAnswers.find((a) => a.start > since)?.end ?? null;
    if (signal === 'api' || signal === 'worker') return this.seen[signal].find((t) => t > since) ?? null;
    const list = this.samples[signal];
    const i = list.findIndex((x) => x.t > since);
    if (i < 0) return null;
    return list.slice(i + 1).find((x) => x.v > list[i].v)?.t ?? null;
  }

  end(): void {
    for (const t of this.timers) clearInterval(t);
  }
}

// ─────────────────────────────── the failures ───────────────────────────────

interface Kill {
  kind: KindName;
  target: string;
  killedAt: number;
  restartedAt: number | null;
  /** ms from the kill to the first sign of each affected signal working again (null: not within the wait). */
  recovery: Partial<Record<Signal, number | null>>;
  /** Part 3 observations made during the failure. */
  observed: Record<string, unknown>;
}

async function partitionLeader(cfg: Config): Promise<number> {
  const admin = kafkaClient(cfg, 'chaos-admin').admin();
  await admin.connect();
  try {
    const [t] = (await admin.fetchTopicMetadata({ topics: [cfg.kafka.rawTopic] })).topics;
    return t.partitions.find((p) => p.partitionId === 0)!.leader;
  } finally {
    await admin.disconnect();
  }
}

/** The KRaft quorum's leader (the active controller), from Kafka's own metadata-quorum tool. */
function activeController(cfg: Config): number | null {
  const libs = path.join(stackPaths(cfg).home, 'kafka', 'libs');
  const res = spawnSync(
    'java',
    ['-cp', `${libs}/*`, 'org.apache.kafka.tools.MetadataQuorumCommand', '--bootstrap-controller', `127.0.0.1:${cfg.stack.ha.kafkaControllerPorts[0]}`, 'describe', '--status'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  const m = /LeaderId:\s+(\d+)/.exec(res.stdout ?? '');
  return m ? Number(m[1]) : null;
}

async function redisPrimaryName(cfg: Config): Promise<string> {
  const sentinel = redisClient({ ...cfg, redis: { ...cfg.redis, sentinels: [], url: `redis://${cfg.redis.sentinels[0]}` } });
  try {
    const [, port] = (await sentinel.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', cfg.redis.sentinelName)) as string[];
    return Number(port) === cfg.stack.redisPort ? 'redis' : 'redis-replica';
  } finally {
    sentinel.disconnect();
  }
}

/** A serving query over the last 10 minutes of event time (speed buckets): status and the buckets' sources. */
async function servingProbe(port: number): Promise<{ status: number; sources?: Record<string, number>; reasons?: string[] }> {
  const to = bucketStart(Date.now() - DAY, 'minute');
  const url = `http://127.0.0.1:${port}/v1/metrics/events?granularity=minute&from=${to - 10 * 60_000}&to=${to}`;
  try {
    const res = await fetch(url, { headers: { 'x-api-key': READ_KEY }, signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { coverage?: Record<string, number>; series?: Array<{ buckets: Array<{ source: string; reason?: string }> }>; error?: string };
    const reasons = [...new Set((body.series ?? []).flatMap((s) => s.buckets.map((b) => b.reason).filter((r): r is string => !!r)))];
    return { status: res.status, sources: body.coverage, reasons: body.error ? [body.error, ...reasons] : reasons };
  } catch {
    return { status: 0 };
  }
}

/** Post one small valid batch and return the status, Retry-After and /health's status. */
async function collectorProbe(port: number): Promise<{ post: number; retryAfter: string | null; health: number }> {
  const health = await httpStatus(`http://127.0.0.1:${port}/health`);
  try {
    const res = await fetch(`http://127.0.0.1:${port}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': INGEST_KEY },
      body: JSON.stringify({ event_id: `probe-${randomBytes(6).toString('hex')}`, event_type: 'click', user_id: 'probe', timestamp: Date.now() - DAY, schema_version: 1 }),
      signal: AbortSignal.timeout(20_000),
    });
    await res.body?.cancel();
    if (res.status === 200) probesAccepted++;
    return { post: res.status, retryAfter: res.headers.get('retry-after'), health };
  } catch {
    return { post: 0, retryAfter: null, health };
  }
}

// ─────────────────────────────── the run ───────────────────────────────

async function main(opts: Options): Promise<number> {
  const t0 = Date.now();
  const run = `chaos${randomBytes(3).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chaos-'));
  log(`run ${run}: ${opts.duration} s at ${opts.rate} ev/s, seed ${opts.seed}, kinds ${opts.kinds.join(',')}; logs in ${dir}`);
  const ha: HaStack = await startHaStack((l) => log(`[stack] ${l}`), { services: [...HA_SERVICES, 'temporal'] });
  const cfg = ha.cfg;
  const ports = { collector: await freePort(), speed: await freePort(), lake: await freePort(), worker: await freePort(), serving: await freePort() };
  const env: Record<string, string> = {
    ...ha.env,
    LOG_LEVEL: 'info',
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_PORT: String(ports.collector),
    COLLECTOR_API_KEYS: INGEST_KEY,
    SPEED_HOST: '127.0.0.1',
    SPEED_PORT: String(ports.speed),
    LAKE_WRITER_HOST: '127.0.0.1',
    LAKE_WRITER_PORT: String(ports.lake),
    // Small files, often: an upload every few seconds is what the lake's recovery is read from.
    LAKE_ROLL_AGE_SEC: '5',
    WORKER_HOST: '127.0.0.1',
    WORKER_PORT: String(ports.worker),
    TEMPORAL_CREATE_SCHEDULES: 'false',
    SERVING_HOST: '127.0.0.1',
    SERVING_PORT: String(ports.serving),
    SERVING_API_KEYS: READ_KEY,
    ...envPairs(opts.env),
  };
  const apps = Object.fromEntries(
    (Object.keys(SCRIPTS) as AppName[]).map((n) => [n, new App(n, ports[n], env, path.join(dir, `${n}.log`))]),
  ) as Record<AppName, App>;
  const redis = redisClient(cfg);
  const result: Record<string, unknown> = { run, options: opts, startedAt: new Date(t0).toISOString(), host: { cpus: os.cpus().length, loadavg: os.loadavg() } };
  let exitCode = 1;
  try {
    for (const a of Object.values(apps)) a.start();
    await waitUntil('every app process healthy', async () => (await Promise.all(Object.values(apps).map((a) => a.healthy()))).every(Boolean), 180_000);
    log(`stack and apps up in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

    const ledger = new Ledger(Math.ceil(opts.rate * (opts.duration + 60)) + opts.batch);
    const load = new Load(`http://127.0.0.1:${ports.collector}`, run, opts, ledger);
    const days = new Set<string>();
    const probes = new Probes(cfg, redis, apps, load, () => [...days]);
    const loadStart = Date.now();
    days.add(dayId(loadStart - DAY));
    const dayTicker = setInterval(() => days.add(dayId(Date.now() - DAY)), 1000);
    load.begin();
    probes.begin();

    // ── the failures, one at a time ──
    const kills: Kill[] = [];
    const loadEnd = loadStart + opts.duration * 1000;
    const slots = Math.max(1, Math.floor((opts.duration - 20) / opts.every));
    const order = killOrder(opts.kinds, slots, opts.seed);
    const random = rng(opts.seed ^ 0x5eed);
    await sleep(15_000);
    for (const kind of order) {
      if (Date.now() + opts.pause * 1000 + 15_000 > loadEnd) break;
      const k = await failOnce(kind, cfg, apps, probes, opts, random);
      kills.push(k);
      log(`${kind} (${k.target}): recovery ${JSON.stringify(k.recovery)} ${Object.keys(k.observed).length ? JSON.stringify(k.observed) : ''}`);
      const nextAt = k.killedAt + opts.every * 1000;
      while (Date.now() < nextAt && Date.now() < loadEnd) await sleep(250);
    }
    while (Date.now() < loadEnd) await sleep(250);
    const leftUnsent = await load.end(120_000);
    const loadStop = Date.now();
    probes.end();
    clearInterval(dayTicker);
    log(`load stopped: ${ledger.accepted} accepted, ${ledger.rejected} rejected, ${load.retries} retried requests, ${leftUnsent} events never sent`);

    // ── drain ──
    const drainT0 = Date.now();
    await drain(cfg, redis, apps);
    const drainMs = Date.now() - drainT0;
    log(`drained in ${(drainMs / 1000).toFixed(0)} s`);

    // ── the daily batch through Temporal ──
    const dayList = [...days].sort();
    const batchT0 = Date.now();
    const client = await connectClient(cfg);
    try {
      const started = await startBackfill(client, cfg, { kind: 'daily', from: dayList[0], to: dayList[dayList.length - 1] });
      await started.handle.result();
    } finally {
      await client.connection.close();
    }
    const batchMs = Date.now() - batchT0;
    log(`daily batch of ${dayList.join(', ')} done in ${(batchMs / 1000).toFixed(0)} s`);

    // ── checks ──
    const checks = await verify(cfg, redis, apps, ledger, run, dayList, dir);
    const killed = new Set(kills.map((k) => k.kind));
    const part3: Array<{ name: string; pass: boolean; detail: string }> = [];
    const isr = kills.filter((k) => k.kind === 'isr-loss');
    if (isr.length > 0) {
      const ok = isr.every((k) => (k.observed.during as Array<{ post: number; retryAfter: string | null; health: number }>).every((o) => o.health === 200 && (o.post === 503 ? o.retryAfter !== null : o.post === 200)) && (k.observed.during as Array<{ post: number }>).some((o) => o.post === 503) && k.recovery.accept != null);
      part3.push({ name: 'collector: /health 200 and 503 + Retry-After with no ISR broker, then 200 without restart', pass: ok && apps.collector.unexpectedExits.length === 0, detail: JSON.stringify(isr.map((k) => k.observed)) });
    }
    const redisKills = kills.filter((k) => k.kind === 'redis');
    if (redisKills.length > 0) {
      const obs = redisKills.flatMap((k) => k.observed.serving as Array<{ status: number }>);
      part3.push({ name: 'serving: answers while Redis fails over', pass: obs.every((o) => o.status === 200), detail: JSON.stringify(obs) });
    }
    const minioKills = kills.filter((k) => k.kind === 'minio');
    if (minioKills.length > 0) {
      const obs = minioKills.flatMap((k) => k.observed.serving as Array<{ status: number; sources?: Record<string, number> }>);
      part3.push({ name: 'serving: answers from speed while MinIO is down', pass: obs.every((o) => o.status === 200 && (o.sources?.speed ?? 0) > 0), detail: JSON.stringify(obs) });
    }
    const crashes = Object.fromEntries(Object.values(apps).map((a) => [a.name, a.unexpectedExits.length]));
    part3.push({ name: 'no process exits by itself (no crash loop)', pass: Object.values(crashes).every((n) => n === 0), detail: JSON.stringify(crashes) });
    const stackStatus = await status({ cfg });
    part3.push({ name: 'every stack service running at the end', pass: stackStatus.every((s) => s.running), detail: stackStatus.filter((s) => !s.running).map((s) => s.name).join(',') || 'all running' });

    const recovery = Object.fromEntries(
      [...killed].map((kind) => {
        const primary = FAILURE_KINDS[kind].primary;
        const fromKill = kills.filter((k) => k.kind === kind).map((k) => k.recovery[primary]).filter((v): v is number => v != null);
        // Only where recovery waited for the restart: a failover (broker, Redis, drive) recovers before it.
        const fromRestart = kills
          .filter((k) => k.kind === kind && k.restartedAt !== null && k.recovery[primary] != null && k.killedAt + k.recovery[primary]! > k.restartedAt)
          .map((k) => k.killedAt + k.recovery[primary]! - k.restartedAt!);
        const unrecovered = kills.filter((k) => k.kind === kind && k.recovery[primary] == null).length;
        return [kind, { signal: primary, fromKill: stats(fromKill), fromRestart: stats(fromRestart), unrecovered }];
      }),
    );
    const avail = availability(load.attempts, loadStart, loadStop);
    const okRequests = load.attempts.filter((a) => a.status === 200).length;
    Object.assign(result, {
      finishedAt: new Date().toISOString(),
      days: dayList,
      load: { accepted: ledger.accepted, rejected: ledger.rejected, requests: load.attempts.length, requests200: okRequests, retries: load.retries, maxBacklogEvents: load.maxBacklog, neverSent: leftUnsent, seconds: (loadStop - loadStart) / 1000 },
      availability: { ...avail, requestShare200: okRequests / Math.max(1, load.attempts.length) },
      recovery,
      kills,
      drainMs,
      batchMs,
      checks: [...checks, ...part3],
      appStarts: Object.fromEntries(Object.values(apps).map((a) => [a.name, a.starts])),
      logs: dir,
    });

    printReport(result, opts);
    const failed = [...checks, ...part3].filter((c) => !c.pass);
    exitCode = failed.length === 0 ? 0 : 1;
  } catch (err) {
    log(`run failed: ${(err as Error).stack ?? err}`);
    result.error = String((err as Error).message ?? err);
  } finally {
    stopping = true;
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    fs.writeFileSync(opts.out, `${JSON.stringify(result, null, 2)}\n`);
    log(`result: ${opts.out}`);
    await Promise.all(Object.values(apps).map((a) => a.kill('SIGTERM').catch(() => undefined)));
    redis.disconnect();
    if (!opts.keep) await ha.stop();
    else log(`stack kept: STACK_HOME=${cfg.stack.home}`);
  }
  return exitCode;
}

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs: number, everyMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Kill one component, restart it after the pause, wait for its signals; returns what was seen. */
async function failOnce(kind: KindName, cfg: Config, apps: Record<AppName, App>, probes: Probes, opts: Options, random: () => number): Promise<Kill> {
  const report = (l: string) => log(`[stack] ${l}`);
  const k: Kill = { kind, target: '', killedAt: 0, restartedAt: null, recovery: {}, observed: {} };
  let restart: () => Promise<void>;
  const during: Array<() => Promise<unknown>> = [];
  switch (kind) {
    case 'broker-leader':
    case 'broker-controller': {
      let id = kind === 'broker-leader' ? await partitionLeader(cfg) : activeController(cfg);
      if (id === null) {
        log('could not read the active controller; killing the partition leader instead');
        id = await partitionLeader(cfg);
      }
      k.target = `kafka-${id}`;
      k.killedAt = Date.now();
      await killService(cfg, k.target);
      restart = async () => void (await up({ cfg, only: [k.target], report }));
      break;
    }
    case 'isr-loss': {
      const leader = await partitionLeader(cfg);
      const other = [1, 2, 3].filter((i) => i !== leader)[Math.floor(random() * 2)];
      k.target = `kafka-${leader}+kafka-${other}`;
      k.killedAt = Date.now();
      await Promise.all([killService(cfg, `kafka-${leader}`), killService(cfg, `kafka-${other}`)]);
      during.push(() => collectorProbe(apps.collector.port));
      restart = async () => void (await up({ cfg, only: [`kafka-${leader}`, `kafka-${other}`], report }));
      break;
    }
    case 'redis': {
      k.target = await redisPrimaryName(cfg);
      k.killedAt = Date.now();
      await killService(cfg, k.target);
      during.push(() => servingProbe(apps.serving.port));
      restart = async () => void (await up({ cfg, only: [k.target], report }));
      break;
    }
    case 'minio-drive': {
      const drive = 1 + Math.floor(random() * cfg.stack.ha.minioDrives);
      const folder = path.join(stackPaths(cfg).data, 'minio', `drive${drive}`);
      k.target = `drive${drive}`;
      k.killedAt = Date.now();
      // As root, removing the folder is what a dead disk looks like (chmod would not stop root).
      fs.rmSync(folder, { recursive: true, force: true });
      // A replaced disk: an empty folder at the same path, which MinIO heals.
      restart = async () => void fs.mkdirSync(folder, { recursive: true });
      break;
    }
    case 'minio': {
      k.target = 'minio';
      k.killedAt = Date.now();
      await killService(cfg, 'minio');
      during.push(() => servingProbe(apps.serving.port));
      restart = async () => void (await up({ cfg, only: ['minio'], report }));
      break;
    }
    default: {
      const app = apps[kind as AppName];
      k.target = kind;
      k.killedAt = Date.now();
      await app.kill('SIGKILL');
      restart = async () => app.start();
    }
  }
  // Observations while it is down (part 3), spread over the pause.
  const obs: unknown[] = [];
  const pauseEnd = k.killedAt + opts.pause * 1000;
  while (Date.now() < pauseEnd) {
    for (const probe of during) obs.push(await probe());
    await sleep(during.length > 0 ? 2000 : 250);
  }
  if (during.length > 0) k.observed[kind === 'isr-loss' ? 'during' : 'serving'] = obs;
  await restart();
  k.restartedAt = Date.now();
  const affects = FAILURE_KINDS[kind].affects;
  const deadline = Date.now() + 120_000;
  for (;;) {
    for (const s of affects) {
      const t = probes.firstAfter(s, s === 'worker' || s === 'api' ? k.restartedAt : k.killedAt);
      k.recovery[s] = t === null ? null : t - k.killedAt;
    }
    if (affects.every((s) => k.recovery[s] != null) || Date.now() > deadline) break;
    await sleep(250);
  }
  return k;
}

/** Every record consumed: the speed layer's offsets in Redis and the lake writer's commits reach the ends. */
async function drain(cfg: Config, redis: Redis, apps: Record<AppName, App>): Promise<void> {
  const admin = kafkaClient(cfg, 'chaos-admin').admin();
  await admin.connect();
  try {
    const high = async (topic: string) => Object.fromEntries((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, Number(o.high)]));
    const raw = await high(cfg.kafka.rawTopic);
    const dlq = await high(cfg.kafka.dlqTopic);
    await waitUntil('the speed layer to apply every offset', async () => {
      const stored = await readOffsets(redis, cfg);
      return Object.entries(raw).every(([p, h]) => h === 0 || stored[Number(p)] === h);
    }, 300_000, 1000);
    await waitUntil('the lake writer to commit every offset', async () => {
      for (const [topic, ends] of [[cfg.kafka.rawTopic, raw], [cfg.kafka.dlqTopic, dlq]] as const) {
        const [c] = await admin.fetchOffsets({ groupId: cfg.kafka.lakeGroup, topics: [topic] });
        const got = new Map(c.partitions.map((p) => [p.partition, Number(p.offset)]));
        if (!Object.entries(ends).every(([p, h]) => h === 0 || got.get(Number(p)) === h)) return false;
      }
      return true;
    }, 300_000, 1000);
  } finally {
    await admin.disconnect();
  }
  void apps;
}

interface Check {
  name: string;
  pass: boolean;
  detail: string;
}

async function verify(cfg: Config, redis: Redis, apps: Record<AppName, App>, ledger: Ledger, run: string, days: string[], dir: string): Promise<Check[]> {
  const checks: Check[] = [];
  const s3 = s3Client(cfg);
  const duck = await Duck.open({ threads: 2 });
  try {
    // The accepted and rejected event numbers, as files DuckDB joins against.
    const acceptedCsv = path.join(dir, 'accepted.csv');
    const rejectedCsv = path.join(dir, 'rejected.csv');
    const a: string[] = ['n'];
    const r: string[] = ['n'];
    ledger.state.forEach((s, n) => (s === 1 ? a.push(String(n)) : s === 2 ? r.push(String(n)) : undefined));
    fs.writeFileSync(acceptedCsv, `${a.join('\n')}\n`);
    fs.writeFileSync(rejectedCsv, `${r.join('\n')}\n`);
    await duck.run(`CREATE TABLE accepted AS SELECT n::BIGINT AS n FROM read_csv('${acceptedCsv}', header = true, columns = {'n': 'BIGINT'})`);
    await duck.run(`CREATE TABLE rejected AS SELECT n::BIGINT AS n FROM read_csv('${rejectedCsv}', header = true, columns = {'n': 'BIGINT'})`);
    const num = (col: string) => `CAST(split_part(${col}, '-', 2) AS BIGINT)`;

    // 1. processed/events of every hour: each accepted id exactly once, nothing else of this run.
    const keys: string[] = [];
    for (const d of days) {
      for (const h of hoursOfDay(d)) {
        const m = await getJson<RunManifest>(s3, cfg.s3.bucket, lakePaths.manifest('hourly', h));
        if (m?.outputs.events) keys.push(m.outputs.events);
      }
    }
    const files = await stageObjects(s3, cfg.s3.bucket, keys, path.join(dir, 'lake'));
    await duck.run(
      files.length > 0
        ? `CREATE TABLE processed AS SELECT ${num('event_id')} AS n FROM read_parquet(${sqlList(files)}) WHERE event_id LIKE '${run}-%'`
        : 'CREATE TABLE processed (n BIGINT)',
    );
    const [p] = await duck.json(`SELECT
        (SELECT count(*) FROM accepted) AS accepted,
        (SELECT count(*) FROM accepted WHERE n NOT IN (SELECT n FROM processed)) AS missing,
        (SELECT count(*) FROM (SELECT n FROM processed GROUP BY n HAVING count(*) > 1)) AS twice,
        (SELECT count(*) FROM processed WHERE n NOT IN (SELECT n FROM accepted)) AS extra`);
    checks.push({
      name: 'batch: every accepted event exactly once in processed/events',
      pass: Number(p.missing) === 0 && Number(p.twice) === 0 && Number(p.extra) === 0 && Number(p.accepted) > 0,
      detail: `accepted ${p.accepted}, missing ${p.missing}, more than once ${p.twice}, not accepted ${p.extra}`,
    });

    // 2. the exact view through the API: the day's event total is the accepted count.
    const from = Date.parse(`${days[0]}T00:00:00Z`);
    const to = Date.parse(`${days[days.length - 1]}T00:00:00Z`) + DAY;
    let apiTotal: number | null = null;
    let sources = '';
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const res = await fetch(`http://127.0.0.1:${apps.serving.port}/v1/metrics/events?granularity=day&from=${from}&to=${to}`, { headers: { 'x-api-key': READ_KEY } }).catch(() => undefined);
      if (res?.status === 200) {
        const body = (await res.json()) as { series: Array<{ buckets: Array<{ source: string; value: unknown }> }> };
        const buckets = body.series[0]?.buckets ?? [];
        sources = buckets.map((b) => b.source).join(',');
        if (buckets.length > 0 && buckets.every((b) => b.source === 'batch')) {
          apiTotal = buckets.reduce((s, b) => s + Number(b.value ?? 0), 0);
          break;
        }
      } else await res?.body?.cancel();
      await sleep(1000);
    }
    checks.push({ name: 'serving (batch, exact): the days\' event total equals the accepted count', pass: apiTotal === ledger.accepted + probesAccepted, detail: `api ${apiTotal} (sources ${sources}), accepted ${ledger.accepted} + ${probesAccepted} probes` });

    // 3. speed: each minute's count equals the accepted events of that minute.
    let bad = 0;
    let first = '';
    for (const [bucket, n] of ledger.minuteCounts) {
      const got = (await readCountBreakdown(redis, cfg, 'minute', bucket))[countField(ALL, ALL, ALL)] ?? 0;
      if (got !== n) {
        bad++;
        first ||= `${new Date(bucket).toISOString()}: speed ${got}, accepted ${n}`;
      }
    }
    checks.push({ name: 'speed: per-minute counts equal the accepted counts', pass: bad === 0 && ledger.minuteCounts.size > 0, detail: `${ledger.minuteCounts.size} minutes, ${bad} differ${first ? ` (first: ${first})` : ''}` });

    // 4. the DLQ: every rejected event archived in raw/dlq/.
    const dlqKeys = (await listObjects(s3, cfg.s3.bucket, lakePaths.rawDlqPrefix)).map((o) => o.key);
    const dlqFiles = await stageObjects(s3, cfg.s3.bucket, dlqKeys, path.join(dir, 'dlq'));
    await duck.run(
      dlqFiles.length > 0
        ? `CREATE TABLE dlq AS SELECT ${num("json_extract_string(raw, '$.event_id')")} AS n FROM read_parquet(${sqlList(dlqFiles)}) WHERE json_extract_string(raw, '$.event_id') LIKE '${run}-%'`
        : 'CREATE TABLE dlq (n BIGINT)',
    );
    const [q] = await duck.json(`SELECT (SELECT count(*) FROM rejected) AS rejected,
        (SELECT count(*) FROM rejected WHERE n NOT IN (SELECT n FROM dlq)) AS missing`);
    checks.push({ name: 'dlq: every rejected event is in raw/dlq/', pass: Number(q.missing) === 0 && Number(q.rejected) > 0, detail: `rejected ${q.rejected}, missing from the DLQ ${q.missing}` });
  } finally {
    duck.close();
  }
  return checks;
}

function printReport(result: Record<string, unknown>, opts: Options): void {
  const out: string[] = [];
  const s = (ms: number | undefined) => (ms === undefined ? '—' : `${(ms / 1000).toFixed(1)}`);
  out.push('', `chaos run ${result.run}: ${opts.duration} s at ${opts.rate} ev/s, seed ${opts.seed}`, '');
  out.push('| failure | kills | recovered by | from kill min / median / max (s) | from restart median (s) | < 30 s |', '| --- | --- | --- | --- | --- | --- |');
  for (const [kind, r] of Object.entries(result.recovery as Record<string, { signal: string; fromKill: ReturnType<typeof stats>; fromRestart: ReturnType<typeof stats>; unrecovered: number }>)) {
    const fk = r.fromKill;
    out.push(`| ${kind} | ${(fk?.n ?? 0) + r.unrecovered} | ${r.signal} | ${fk ? `${s(fk.min)} / ${s(fk.median)} / ${s(fk.max)}` : 'never'} | ${s(r.fromRestart?.median)} | ${fk && r.unrecovered === 0 && fk.max < 30_000 ? 'yes' : 'no'} |`);
  }
  const av = result.availability as { up: number; downMs: number; outages: number; requestShare200: number };
  out.push('', `availability: ${(av.up * 100).toFixed(2)} % of the time (${(av.downMs / 1000).toFixed(1)} s unavailable in ${av.outages} outages); ${(av.requestShare200 * 100).toFixed(2)} % of requests answered 200`, '');
  for (const c of result.checks as Check[]) out.push(`${c.pass ? 'PASS' : 'FAIL'}  ${c.name}: ${c.detail}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

// ─────────────────────────────── CLI ───────────────────────────────

const positive = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
};

const program = new Command('chaos')
  .description(
    'Chaos run on a replicated stack of its own (3 Kafka brokers, Redis + replica + Sentinels, MinIO on 4 drives, Temporal) and the five app processes: ' +
      'load at --rate, one component killed at a time on a seeded schedule and restarted after --pause; then drain, the daily batch, and the zero-loss checks. ' +
      'Exits non-zero when a check fails. Never touches the shared stack.',
  )
  .option('--duration <s>', 'seconds of load (and kills)', positive, 600)
  .option('--rate <ev/s>', 'events per second offered to the collector', positive, 5000)
  .option('--seed <n>', 'seed of the kill order', (v) => Math.trunc(positive(v)), 16)
  .addOption(
    new Option('--kinds <list>', `failure kinds, comma-separated (${KIND_NAMES.join(', ')})`)
      .default(KIND_NAMES, 'all')
      .argParser((v) => {
        const list = v.split(',').map((x) => x.trim()).filter(Boolean);
        const bad = list.filter((x) => !(x in FAILURE_KINDS));
        if (bad.length > 0 || list.length === 0) throw new InvalidArgumentError(`unknown kind ${bad.join(', ')} (kinds: ${KIND_NAMES.join(', ')})`);
        return list as KindName[];
      }),
  )
  .option('--every <s>', 'seconds between two kills (a kill also waits for the previous recovery)', positive, 30)
  .option('--pause <s>', 'seconds a killed component stays down before its restart', positive, 10)
  .option('--batch <n>', 'events per request', (v) => Math.trunc(positive(v)), 100)
  .option('--clients <n>', 'concurrent client connections', (v) => Math.trunc(positive(v)), 16)
  .option('--invalid <fraction>', 'share of invalid events (rejected to the DLQ)', (v) => Number(v), 0.005)
  .option('--out <file>', 'JSON result file', `test-results/chaos-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  .option('--env <KEY=VALUE...>', 'a setting for every app process (e.g. SPEED_SESSION_TIMEOUT_MS=10000), repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--keep', 'leave the replicated stack running at the end (prints its STACK_HOME)', false)
  .showHelpAfterError();

program.parse();
main(program.opts<Options>()).then(
  (code) => process.exit(code),
  (err) => {
    log(`fatal: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
