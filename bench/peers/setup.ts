/**
 * Installs the peer engines the benchmarks compare with, once, under STACK_HOME/peers:
 *   - PySpark (pinned) in its own Python venv; Java 17 from the machine runs it;
 *   - the Kafka Streams topology (bench/peers/kafka-streams), built with Maven into a
 *     jar that carries its dependencies; rebuilt when its sources change.
 * Each ends in a marker file, so an interrupted install is redone, not half-used.
 *
 *   npx tsx bench/peers/setup.ts [pyspark] [kafka-streams]     # both without arguments
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, REPO_ROOT } from '../../common/config';
import { run, which } from '../../infra/proc';

export const PYSPARK_VERSION = '4.0.1';

function peersHome(): string {
  return path.join(loadConfig().stack.home, 'peers');
}

/** The venv's python with PySpark importable; installs it on first use. Throws when it cannot be installed. */
export async function ensurePyspark(): Promise<string> {
  const home = peersHome();
  const venv = path.join(home, `pyspark-${PYSPARK_VERSION}`);
  const python = path.join(venv, 'bin', 'python');
  const done = path.join(venv, '.complete');
  if (fs.existsSync(done)) return python;
  const py = which('python3');
  if (!py) throw new Error('python3 is not on PATH: PySpark cannot be installed');
  if (!which('java')) throw new Error('java is not on PATH: PySpark needs Java 17');
  fs.rmSync(venv, { recursive: true, force: true });
  const logFile = path.join(home, 'install-pyspark.log');
  await run(py, ['-m', 'venv', venv], { logFile, what: 'creating the PySpark venv' });
  await run(python, ['-m', 'pip', 'install', '--quiet', `pyspark==${PYSPARK_VERSION}`], {
    logFile,
    what: `pip install pyspark==${PYSPARK_VERSION}`,
    timeoutMs: 20 * 60_000,
  });
  fs.writeFileSync(done, `${PYSPARK_VERSION}\n`);
  return python;
}

export const STREAMS_DIR = path.join(REPO_ROOT, 'bench', 'peers', 'kafka-streams');

/** The Kafka Streams bench's runnable jar; built (mvn -q package) when missing or its sources changed. */
export async function ensureStreamsJar(): Promise<string> {
  const digest = sourceDigest(STREAMS_DIR);
  const home = path.join(peersHome(), 'kafka-streams');
  const jar = path.join(home, `peer-streams-${digest.slice(0, 12)}.jar`);
  if (fs.existsSync(jar)) return jar;
  if (!which('mvn')) throw new Error('mvn is not on PATH: the Kafka Streams peer cannot be built');
  const target = path.join(home, 'target');
  fs.mkdirSync(home, { recursive: true });
  await run('mvn', ['-q', '-f', path.join(STREAMS_DIR, 'pom.xml'), `-Dpeer.buildDir=${target}`, 'package'], {
    logFile: path.join(home, 'build.log'),
    what: 'building the Kafka Streams peer (mvn package)',
    timeoutMs: 20 * 60_000,
  });
  fs.copyFileSync(path.join(target, 'peer-streams.jar'), `${jar}.tmp`);
  fs.renameSync(`${jar}.tmp`, jar);
  for (const f of fs.readdirSync(home)) if (/^peer-streams-.*\.jar$/.test(f) && path.join(home, f) !== jar) fs.rmSync(path.join(home, f));
  return jar;
}

/** Hash of the pom and the Java sources: what the jar is built from. */
function sourceDigest(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'target') walk(p);
      } else if (e.name === 'pom.xml' || e.name.endsWith('.java')) {
        h.update(path.relative(dir, p)).update(fs.readFileSync(p));
      }
    }
  };
  walk(dir);
  return h.digest('hex');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const which_ = process.argv.slice(2);
  const all = which_.length === 0;
  (async () => {
    if (all || which_.includes('pyspark')) process.stdout.write(`pyspark: ${await ensurePyspark()}\n`);
    if (all || which_.includes('kafka-streams')) process.stdout.write(`kafka-streams: ${await ensureStreamsJar()}\n`);
  })().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  });
}
