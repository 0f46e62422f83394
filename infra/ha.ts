/**
 * The replicated stack's home: a marker that tells every later process (infra:down/status, the
 * services, the tests) that this STACK_HOME is the HA topology, and links to what another home has
 * already installed (Kafka jars, the MinIO and Temporal binaries) so nothing is fetched or built twice.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HA_MARKER, type Config } from '../common/config';
import { writeFileAtomic } from './proc';
import { stackPaths } from './services';

const SHARED_INSTALLS = ['kafka/libs', 'bin/minio', 'bin/temporal'];

export function prepareHaHome(cfg: Config): void {
  const home = cfg.stack.home;
  fs.mkdirSync(home, { recursive: true });
  writeFileAtomic(path.join(home, HA_MARKER), 'kafka: 3 brokers (RF 3, min ISR 2); redis: primary + replica + 3 sentinels; minio: 4 drives\n');
  const from = cfg.stack.ha.installFrom;
  if (path.resolve(from) === path.resolve(home)) return;
  for (const rel of SHARED_INSTALLS) {
    const source = path.join(from, rel);
    const target = path.join(home, rel);
    // Only a complete install is shared (the Kafka download marks itself complete last).
    const complete = rel === 'kafka/libs' ? fs.existsSync(path.join(source, '.complete')) : fs.existsSync(source);
    if (!complete || fs.existsSync(target) || isLink(target)) continue;
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.symlinkSync(source, target);
  }
  fs.mkdirSync(stackPaths(cfg).run, { recursive: true });
}

function isLink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}
