#!/usr/bin/env node
// First step of `npm test` and `npm run demo` on a fresh clone: check Node, install
// the npm dependencies when they are missing or stale. Plain Node, no dependencies.
// The native stack (Kafka, Redis, MinIO, Temporal) is installed by infra/ on first start.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(`bootstrap: Node ${process.versions.node} is too old; this project needs Node >= 20.19`);
  process.exit(1);
}

const lock = path.join(root, 'package-lock.json');
const installed = path.join(root, 'node_modules', '.package-lock.json');
const stale = !fs.existsSync(installed) || fs.statSync(lock).mtimeMs > fs.statSync(installed).mtimeMs;
if (stale) {
  // `npm install` (not `npm ci`): it installs the versions package-lock.json pins, and unlike
  // `npm ci` it accepts a lock written with omit-lockfile-registry-resolved, which npm 11 otherwise
  // reports as missing the other platforms' optional packages.
  console.error('bootstrap: installing npm dependencies (npm install)…');
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('bootstrap: npm install failed');
    process.exit(r.status ?? 1);
  }
}

// npm scripts run on the Node of the `node` dev dependency (node_modules/.bin comes first on their
// PATH). Its binary comes from its install script, which package.json's allowScripts permits.
const bundledNode = path.join(root, 'node_modules', '.bin', 'node');
const probe = spawnSync(bundledNode, ['-v'], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.error(`bootstrap: ${bundledNode} does not run (its install script did not fetch the binary?); try: npm rebuild node`);
  process.exit(1);
}

// The dashboard's page test drives Debian's Chromium through playwright-core (no browser download).
if (!fs.existsSync('/usr/bin/chromium')) {
  if (process.getuid?.() === 0) {
    console.error('bootstrap: installing Chromium for the page tests (apt-get install chromium)…');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    const install = update.status === 0 ? spawnSync('apt-get', ['install', '-y', '-qq', 'chromium'], { stdio: 'inherit', env }) : update;
    if (install.status !== 0) console.error('bootstrap: could not install chromium; the dashboard page test will fail (apt-get install chromium)');
  } else {
    console.error('bootstrap: /usr/bin/chromium is missing; the dashboard page test needs it (sudo apt-get install chromium)');
  }
}
