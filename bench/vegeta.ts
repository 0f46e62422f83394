/**
 * An open-loop HTTP load generator for the latency benches: vegeta (github.com/tsenart/vegeta), installed once
 * under STACK_HOME/tools with `go install` (Go is on the machine; the module proxy serves it).
 *
 * Why not autocannon for a latency target: with a rate, each autocannon connection sends its quota for the
 * second back to back and then waits for the next second, so "1,000 req/s" is a burst of 1,000 requests at the
 * start of every second; and its coordinated-omission correction assumes one request per millisecond per
 * connection (`Math.ceil(1 / rate)`), so every response slower than 1 ms adds synthetic samples down to 1 ms,
 * which inflates the tail it reports. vegeta sends each request at its scheduled instant, whatever the earlier
 * ones are doing (more workers when they are busy), so a slow response cannot hide the requests behind it.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../common/config';
import { run, which } from '../infra/proc';

export const VEGETA_MODULE = 'github.com/tsenart/vegeta/v12';
export const VEGETA_VERSION = 'v12.13.0';

/** The vegeta binary, built on first use. Throws with what to do when Go is missing. */
export async function ensureVegeta(): Promise<string> {
  const dir = path.join(loadConfig().stack.home, 'tools', `vegeta-${VEGETA_VERSION}`);
  const bin = path.join(dir, 'vegeta');
  if (fs.existsSync(bin)) return bin;
  if (!which('go')) throw new Error('vegeta is built with Go, which is not on PATH: install Go, or run with --loadgen autocannon');
  fs.mkdirSync(dir, { recursive: true });
  await run('go', ['install', `${VEGETA_MODULE}@${VEGETA_VERSION}`], {
    logFile: path.join(dir, 'install.log'),
    env: { GOBIN: path.join(dir, 'tmp') },
    what: `go install ${VEGETA_MODULE}@${VEGETA_VERSION}`,
    timeoutMs: 10 * 60_000,
  });
  fs.renameSync(path.join(dir, 'tmp', 'vegeta'), bin);
  return bin;
}

export interface AttackResult {
  requests: number;
  /** Requests per second sent, and answered successfully per second. */
  rate: number;
  throughput: number;
  /** Latencies in ms. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Status code → count (0 = no response). */
  statusCodes: Record<string, number>;
  errors: string[];
}

/** Attacks `base` + each path in turn at a constant `rate` for `seconds`, with `headers` on every request. */
export async function attack(opts: { bin: string; base: string; paths: string[]; headers: Record<string, string>; rate: number; seconds: number }): Promise<AttackResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vegeta-'));
  try {
    const targets = path.join(dir, 'targets.txt');
    const header = Object.entries(opts.headers).map(([k, v]) => `${k}: ${v}\n`).join('');
    fs.writeFileSync(targets, opts.paths.map((p) => `GET ${opts.base}${p}\n${header}\n`).join(''));
    const results = path.join(dir, 'results.bin');
    await exec(opts.bin, ['attack', `-targets=${targets}`, `-rate=${opts.rate}/s`, `-duration=${opts.seconds}s`, `-output=${results}`]);
    const report = JSON.parse(await exec(opts.bin, ['report', '-type=json', results])) as {
      requests: number;
      rate: number;
      throughput: number;
      latencies: Record<string, number>;
      status_codes: Record<string, number>;
      errors: string[] | null;
    };
    const ms = (ns: number) => Math.round(ns / 1e4) / 100;
    const l = report.latencies;
    return {
      requests: report.requests,
      rate: report.rate,
      throughput: report.throughput,
      p50: ms(l['50th']),
      p90: ms(l['90th']),
      p99: ms(l['99th']),
      max: ms(l.max),
      statusCodes: report.status_codes,
      errors: report.errors ?? [],
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function exec(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args[0]} exited with ${code}: ${err.trim()}`))));
  });
}
