/**
 * Prometheus, promtool and amtool, which the monitoring tests run against
 * deploy/: Debian's `prometheus` and `prometheus-alertmanager` packages,
 * fetched once with `apt-get download` and unpacked with `dpkg -x` under
 * STACK_HOME/tools (no root, no service installed or started, nothing outside
 * STACK_HOME touched). Their binaries are static Go programs.
 */
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../common/config';

function sh(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 10 * 60_000 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message} (needs Debian's apt-get and dpkg)`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The unpacked root of a Debian package (its files under usr/…), downloading it on first use. */
function ensureDebianPackage(cfg: Config, pkg: string, report: (line: string) => void): string {
  const root = path.join(cfg.stack.home, 'tools', pkg);
  // Written last: a half-finished download or unpack is redone, not used.
  const done = path.join(root, '.installed');
  if (fs.existsSync(done)) return root;
  report(`installing ${pkg} (Debian package, apt-get download + dpkg -x) into ${root} (first run only)`);
  fs.rmSync(root, { recursive: true, force: true });
  const tmp = `${root}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  sh('apt-get', ['download', '-qq', pkg], tmp);
  const deb = fs.readdirSync(tmp).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${tmp} (apt-get update?)`);
  sh('dpkg', ['-x', deb, 'root'], tmp);
  fs.renameSync(path.join(tmp, 'root'), root);
  fs.writeFileSync(done, `${deb}\n`);
  fs.rmSync(tmp, { recursive: true, force: true });
  return root;
}

export interface PrometheusTools {
  prometheus: string;
  promtool: string;
  amtool: string;
}

/**
 * Paths of the three executables, installing them on first use. Throws with apt's output when that fails.
 * (Not Alertmanager itself: Debian's build reads its default template from /usr/share/prometheus/alertmanager.)
 */
export function ensurePrometheus(cfg: Config, report: (line: string) => void = () => {}): PrometheusTools {
  const prom = ensureDebianPackage(cfg, 'prometheus', report);
  const am = ensureDebianPackage(cfg, 'prometheus-alertmanager', report);
  return {
    prometheus: path.join(prom, 'usr/bin/prometheus'),
    promtool: path.join(prom, 'usr/bin/promtool'),
    amtool: path.join(am, 'usr/bin/amtool'),
  };
}

/**
 * A bearer token for MinIO's /minio/v2/metrics/* (what `mc admin prometheus generate` prints):
 * an HS512 JWT signed with the S3 secret key. The native stack's MinIO keeps its metrics private;
 * docker-compose makes them public (MINIO_PROMETHEUS_AUTH_TYPE) instead.
 */
export function minioMetricsToken(cfg: Config, validForSec = 365 * 86_400): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS512', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + validForSec, sub: cfg.s3.accessKeyId, iss: 'prometheus' })}`;
  return `${head}.${createHmac('sha512', cfg.s3.secretAccessKey).update(head).digest('base64url')}`;
}
