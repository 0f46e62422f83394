/**
 * The monitoring kit (deploy/) against the real processes: promtool and amtool accept the files;
 * Debian's Prometheus, with a config generated from deploy/prometheus/prometheus.yml (1 s scrapes,
 * this test's ports, the rules' `for` shortened to 2 s), scrapes a live collector, speed layer, lake
 * writer, serving layer, batch worker and MinIO, finds every metric the alerts and the dashboard read,
 * and fires CollectorErrorRate when bad events are posted and ProcessDown when a process stops.
 * Alertmanager is only checked by amtool: Debian's build reads its default template from
 * /usr/share/prometheus/alertmanager, which an unpacked package under STACK_HOME does not provide.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadConfig, type Config } from '../../common/config';
import { startLakeWriter, type LakeWriterService } from '../../batch-layer/lake-writer/service';
import { startCollector, type RunningCollector } from '../../ingestion/collector/service';
import { ensurePrometheus, minioMetricsToken, type PrometheusTools } from '../../infra/prometheus';
import { startServing, type Serving } from '../../serving-layer/service';
import { startSpeedLayer, type SpeedLayer } from '../../speed-layer/service';
import { startBatchWorker } from '../../workflows/service';
import { isolatedConfig } from '../support/isolated';
import { DEPLOY, kitQueries, metricNames } from '../support/monitoring-kit';
import { quietTemporalRuntime } from '../support/temporal';
import { waitFor } from './speed-support';

const KEY = 'it-key';
let tools: PrometheusTools;
let tmp: string;
let cfg: Config;
const children: ChildProcess[] = [];
let collector: RunningCollector;
let serving: Serving;
let speed: SpeedLayer;
let lake: LakeWriterService;
let worker: Awaited<ReturnType<typeof startBatchWorker>>;
let promUrl: string;
let targets: Record<string, string>;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

/** Prometheus scrapes and evaluates every second or two: poll slower, wait longer than the speed tests do. */
const until = <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => waitFor(what, probe, 90_000, 500);

function check(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  expect(r.status, `${path.basename(cmd)} ${args.join(' ')}:\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}


async function api<T>(p: string): Promise<T> {
  const res = await fetch(`${promUrl}${p}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`${p}: ${body.error}`);
  return body.data;
}

interface PromAlert {
  labels: Record<string, string>;
  state: string;
}
const firing = async (name: string, match: Record<string, string> = {}) =>
  (await api<{ alerts: PromAlert[] }>('/api/v1/alerts')).alerts.find((a) => a.state === 'firing' && a.labels.alertname === name && Object.entries(match).every(([k, v]) => a.labels[k] === v));

beforeAll(async () => {
  tools = ensurePrometheus(loadConfig());
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'monitoring-'));
  quietTemporalRuntime();
  cfg = await isolatedConfig('monitoring', {
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_PORT: '0',
    COLLECTOR_API_KEYS: KEY,
    SPEED_PORT: '0',
    SPEED_HOST: '127.0.0.1',
    LAKE_WRITER_PORT: '0',
    LAKE_WRITER_HOST: '127.0.0.1',
    WORKER_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    TEMPORAL_CREATE_SCHEDULES: 'false',
  });
  collector = await startCollector(cfg);
  serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  speed = await startSpeedLayer(cfg, { alerts: false, defaultMetrics: true });
  lake = await startLakeWriter(cfg);
  worker = await startBatchWorker(cfg);
  const hostPort = (url: string) => new URL(url).host.replace('[::1]', '127.0.0.1');
  targets = {
    collector: hostPort(collector.address),
    'speed-layer': `127.0.0.1:${speed.port}`,
    'lake-writer': `127.0.0.1:${lake.port}`,
    serving: `127.0.0.1:${serving.port}`,
    worker: `127.0.0.1:${worker.port}`,
    minio: new URL(cfg.s3.endpoint).host,
  };

  // Prometheus: the real config, on this test's targets, with 1 s intervals.
  const prom = parse(fs.readFileSync(path.join(DEPLOY, 'prometheus/prometheus.yml'), 'utf8'));
  prom.global = { scrape_interval: '1s', evaluation_interval: '1s' };
  // Alerts are read from Prometheus' own API (see above for Alertmanager).
  delete prom.alerting;
  fs.writeFileSync(path.join(tmp, 'minio.token'), minioMetricsToken(cfg, 3600));
  for (const job of prom.scrape_configs) {
    expect(targets[job.job_name], `a target for job ${job.job_name}`).toBeDefined();
    job.static_configs = [{ targets: [targets[job.job_name]] }];
    if (job.job_name === 'minio') job.bearer_token_file = path.join(tmp, 'minio.token');
  }
  const rules = parse(fs.readFileSync(path.join(DEPLOY, 'prometheus/alerts.yml'), 'utf8'));
  for (const g of rules.groups) for (const r of g.rules) if (r.for) r.for = '2s';
  fs.writeFileSync(path.join(tmp, 'alerts.yml'), stringify(rules));
  fs.writeFileSync(path.join(tmp, 'prometheus.yml'), stringify(prom));
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  children.push(
    spawn(tools.prometheus, [`--config.file=${path.join(tmp, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(tmp, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: 'ignore' }),
  );
  await until('Prometheus to answer', async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined));
});

afterAll(async () => {
  for (const c of children) c.kill('SIGTERM');
  await collector?.stop();
  await serving?.stop();
  await speed?.stop();
  await lake?.stop();
  await worker?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the monitoring kit', () => {
  it('passes promtool check config, check rules, test rules, and amtool check-config', () => {
    expect(check(tools.promtool, ['check', 'config', path.join(DEPLOY, 'prometheus/prometheus.yml')])).toMatch(/SUCCESS/);
    expect(check(tools.promtool, ['check', 'rules', path.join(DEPLOY, 'prometheus/alerts.yml')])).toMatch(/SUCCESS: \d+ rules found/);
    expect(check(tools.promtool, ['test', 'rules', path.join(DEPLOY, 'prometheus/alerts.test.yml')])).toMatch(/SUCCESS/);
    check(tools.amtool, ['check-config', path.join(DEPLOY, 'alertmanager/alertmanager.yml')]);
    check(tools.promtool, ['check', 'config', path.join(tmp, 'prometheus.yml')]);
  });

  it('scrapes every process and MinIO: every target is up', async () => {
    const up = await until('every target up', async () => {
      const t = await api<{ activeTargets: Array<{ labels: { job: string }; health: string; lastError: string }> }>('/api/v1/targets');
      return t.activeTargets.length === Object.keys(targets).length && t.activeTargets.every((x) => x.health === 'up') ? t.activeTargets : undefined;
    });
    expect(up.map((t) => t.labels.job).sort()).toEqual(['collector', 'lake-writer', 'minio', 'serving', 'speed-layer', 'worker']);
    const values = await api<{ result: Array<{ metric: { job: string }; value: [number, string] }> }>('/api/v1/query?query=up');
    expect(values.result.every((r) => r.value[1] === '1')).toBe(true);
  });

  it('every metric an alert or a panel reads is in a real scrape, and every query evaluates', async () => {
    const types = new Set<string>(['up']);
    for (const [job, target] of Object.entries(targets)) {
      const p = job === 'minio' ? '/minio/v2/metrics/cluster' : '/metrics';
      const res = await fetch(`http://${target}${p}`, job === 'minio' ? { headers: { authorization: `Bearer ${minioMetricsToken(cfg, 600)}` } } : {});
      expect(res.status, job).toBe(200);
      for (const m of (await res.text()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        types.add(m[1]);
        if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) types.add(m[1] + s);
      }
    }
    const missing: string[] = [];
    for (const q of kitQueries()) {
      for (const n of metricNames(q.expr)) if (!types.has(n)) missing.push(`${q.where}: ${n}`);
      await api(`/api/v1/query?query=${encodeURIComponent(q.expr.replaceAll('$__rate_interval', '1m'))}`);
    }
    expect(missing).toEqual([]);
  });

  it('fires CollectorErrorRate when the collector dead-letters events', async () => {
    expect(await firing('CollectorErrorRate')).toBeUndefined();
    const bad = JSON.stringify(Array.from({ length: 20 }, (_, i) => ({ event_id: `bad-${i}`, event_type: 'not-a-type', user_id: 'u', timestamp: Date.now() })));
    const send = setInterval(() => {
      void fetch(`${collector.address.replace('[::1]', '127.0.0.1')}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: bad }).catch(() => {});
    }, 500);
    try {
      const alert = await until('CollectorErrorRate firing', () => firing('CollectorErrorRate'));
      expect(alert.labels.severity).toBe('warning');
    } finally {
      clearInterval(send);
    }
    expect(await firing('ProcessDown')).toBeUndefined();
  });

  it('fires ProcessDown for the lake writer once it stops answering', async () => {
    await lake.stop();
    const alert = await until('ProcessDown firing', () => firing('ProcessDown', { job: 'lake-writer' }));
    expect(alert.labels.severity).toBe('critical');
  });
});
