/**
 * The native stack as a library: up (install once, start, health-check,
 * provision), down (stop what we started, by pid), status. Used by the CLI
 * (`npm run infra:*`), the demo and the integration tests' global setup.
 */
import fs from 'node:fs';
import { config as defaultConfig, type Config } from '../common/config';
import { cmdlineOf, isAlive, portInUse, readPid, sleep, StackError, stopProcess, tail, waitFor, which, writeFileAtomic } from './proc';
import { prepareHaHome } from './ha';
import { services, stackPaths, type Service } from './services';

export type Report = (line: string) => void;
const stderrReport: Report = (line) => process.stderr.write(`${line}\n`);

const PORT_ENV: Record<string, string[]> = {
  kafka: ['KAFKA_PORT', 'KAFKA_CONTROLLER_PORT'],
  redis: ['REDIS_PORT'],
  minio: ['MINIO_PORT', 'MINIO_CONSOLE_PORT'],
  temporal: ['TEMPORAL_PORT', 'TEMPORAL_UI_PORT'],
  'kafka-1': ['KAFKA_HA_PORTS', 'KAFKA_HA_CONTROLLER_PORTS'],
  'kafka-2': ['KAFKA_HA_PORTS', 'KAFKA_HA_CONTROLLER_PORTS'],
  'kafka-3': ['KAFKA_HA_PORTS', 'KAFKA_HA_CONTROLLER_PORTS'],
  'redis-replica': ['REDIS_REPLICA_PORT'],
  'sentinel-1': ['REDIS_SENTINEL_PORTS'],
  'sentinel-2': ['REDIS_SENTINEL_PORTS'],
  'sentinel-3': ['REDIS_SENTINEL_PORTS'],
};

/** A name picks that service, or on the HA stack its group: `kafka` is kafka-1..3, `redis` the primary and its replica. */
const picks = (name: string, svc: Service) => svc.name === name || svc.name.startsWith(`${name}-`);

function select(cfg: Config, only?: string[]): Service[] {
  const all = services(cfg);
  if (!only || only.length === 0) return all;
  const unknown = only.filter((n) => !all.some((s) => picks(n, s)));
  if (unknown.length > 0) throw new StackError(`unknown service ${unknown.join(', ')} (services: ${all.map((s) => s.name).join(', ')})`);
  return all.filter((s) => only.some((n) => picks(n, s)));
}

/** Our live pid for a service, or null (a stale pid file or a recycled pid count as none). */
function ownPid(cfg: Config, svc: Service): number | null {
  const pid = readPid(stackPaths(cfg).pid(svc.name));
  return pid !== null && isAlive(pid) && cmdlineOf(pid).includes(svc.cmdlineMarker) ? pid : null;
}

function elapsed(startMs: number): string {
  const s = Math.round((Date.now() - startMs) / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** One `up` at a time per STACK_HOME (the tests' global setup and a user may race). */
async function withLock<T>(cfg: Config, fn: () => Promise<T>): Promise<T> {
  const lock = `${stackPaths(cfg).run}/up.lock`;
  fs.mkdirSync(stackPaths(cfg).run, { recursive: true });
  const deadline = Date.now() + 45 * 60_000;
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      const holder = readPid(lock);
      if (holder === null || !isAlive(holder)) {
        fs.rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new StackError(`another infra:up (pid ${holder}) holds ${lock}`);
      await sleep(500);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

async function install(cfg: Config, todo: Service[], report: Report): Promise<void> {
  const missing = todo.flatMap((s) => s.requires.filter((r) => which(r.cmd) === null).map((r) => `  - ${r.cmd} (for ${s.name}): ${r.hint}`));
  if (missing.length > 0) throw new StackError(`missing tools needed to install the stack:\n${missing.join('\n')}`);
  const p = stackPaths(cfg);
  await Promise.all(
    todo.map(async (svc) => {
      const t0 = Date.now();
      report(`[${svc.name}] installing (first run only); log: ${p.log(`install-${svc.name}`)}`);
      const ticker = setInterval(() => report(`[${svc.name}] still installing… ${elapsed(t0)}`), 30_000);
      try {
        await svc.install();
      } finally {
        clearInterval(ticker);
      }
      report(`[${svc.name}] installed in ${elapsed(t0)}`);
    }),
  );
}

async function startOne(cfg: Config, svc: Service, report: Report): Promise<'reused' | 'started'> {
  const p = stackPaths(cfg);
  const timeoutMs = cfg.stack.startTimeoutSec * 1000;
  const existing = ownPid(cfg, svc);
  if (existing !== null) {
    await waitFor(() => svc.healthy(), { timeoutMs, what: `${svc.name} (pid ${existing}, already running)` }).catch((err: Error) => {
      throw new StackError(`${err.message}; it is ours but not healthy — try npm run infra:down; log: ${p.log(svc.name)}`);
    });
    await svc.provision?.();
    return 'reused';
  }
  for (const port of svc.ports) {
    if (await portInUse(port)) {
      throw new StackError(
        `port ${port} needed by ${svc.name} is in use by another process; stop it or choose other ports (${(PORT_ENV[svc.name] ?? []).join(', ')})`,
      );
    }
  }
  const t0 = Date.now();
  const pid = await svc.start();
  writeFileAtomic(p.pid(svc.name), `${pid}\n`);
  await waitFor(() => svc.healthy(), {
    timeoutMs,
    what: `${svc.name} (pid ${pid})`,
    abortIf: () => (isAlive(pid) ? null : `${svc.name} exited during start; log: ${p.log(svc.name)}\n${tail(p.log(svc.name), 15)}`),
  }).catch((err: Error) => {
    throw new StackError(err.message.includes('log:') ? err.message : `${err.message}; log: ${p.log(svc.name)}\n${tail(p.log(svc.name), 15)}`);
  });
  await svc.provision?.();
  report(`[${svc.name}] up in ${elapsed(t0)} (pid ${pid})`);
  return 'started';
}

export interface UpResult {
  started: string[];
  reused: string[];
  urls: Record<string, string>;
}

/** Install what is missing, start what is down, health-check and provision everything. Idempotent. */
export async function up(opts: { cfg?: Config; only?: string[]; report?: Report } = {}): Promise<UpResult> {
  const cfg = opts.cfg ?? defaultConfig();
  const report = opts.report ?? stderrReport;
  const chosen = select(cfg, opts.only);
  return withLock(cfg, async () => {
    const p = stackPaths(cfg);
    if (cfg.stack.ha.enabled) prepareHaHome(cfg);
    for (const dir of [p.bin, p.data, p.logs, p.run]) fs.mkdirSync(dir, { recursive: true });
    await install(cfg, chosen.filter((s) => !s.installed()), report);
    const outcomes = await Promise.allSettled(chosen.map((s) => startOne(cfg, s, report)));
    const failures = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`[${chosen[i].name}] ${(o.reason as Error).message}`] : []));
    if (failures.length > 0) throw new StackError(`the stack did not come up:\n${failures.join('\n')}`);
    const result: UpResult = { started: [], reused: [], urls: {} };
    outcomes.forEach((o, i) => {
      if (o.status === 'fulfilled') result[o.value].push(chosen[i].name);
      Object.assign(result.urls, chosen[i].urls());
    });
    return result;
  });
}

/** Stop the services this stack started (by the pids it recorded, nothing else). */
export async function down(opts: { cfg?: Config; only?: string[]; report?: Report } = {}): Promise<string[]> {
  const cfg = opts.cfg ?? defaultConfig();
  const report = opts.report ?? stderrReport;
  const stopped: string[] = [];
  // Reverse start order: clients of Kafka/Temporal go before them.
  for (const svc of select(cfg, opts.only).reverse()) {
    const pidFile = stackPaths(cfg).pid(svc.name);
    const pid = ownPid(cfg, svc);
    if (pid !== null) {
      const how = await stopProcess(pid);
      report(`[${svc.name}] ${how} (pid ${pid})`);
      stopped.push(svc.name);
    }
    fs.rmSync(pidFile, { force: true });
  }
  return stopped;
}

export interface ServiceStatus {
  name: string;
  pid: number | null;
  running: boolean;
  healthy: boolean;
  installed: boolean;
  ports: number[];
  log: string;
}

export async function status(opts: { cfg?: Config; only?: string[] } = {}): Promise<ServiceStatus[]> {
  const cfg = opts.cfg ?? defaultConfig();
  return Promise.all(
    select(cfg, opts.only).map(async (svc) => {
      const pid = ownPid(cfg, svc);
      const healthy = await Promise.race([svc.healthy().catch(() => false), sleep(5000).then(() => false)]);
      return { name: svc.name, pid, running: pid !== null, healthy, installed: svc.installed(), ports: svc.ports, log: stackPaths(cfg).log(svc.name) };
    }),
  );
}

export function urls(cfg: Config = defaultConfig()): Record<string, string> {
  return Object.assign({}, ...services(cfg).map((s) => s.urls()));
}

export function logFile(name: string, cfg: Config = defaultConfig()): string {
  select(cfg, [name]);
  return stackPaths(cfg).log(name);
}
