/** runService's contract with a supervisor: --help, the stop on SIGTERM, and the exit codes 0, 1 and 2. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../common/config';

interface Run {
  code: number | null;
  out: string;
}

/** Runs the fixture; with `signal`, sends it once the fixture logged its start. */
function run(fixture: string, opts: { signal?: NodeJS.Signals; args?: string[] } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'test/support/run-service-fixture.ts', ...(opts.args ?? [])], {
      cwd: REPO_ROOT,
      env: { ...process.env, FIXTURE: fixture, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let sent = false;
    const onData = (d: Buffer) => {
      out += d.toString();
      if (opts.signal && !sent && out.includes('fixture started')) {
        sent = true;
        p.kill(opts.signal);
      }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (code) => (clearTimeout(timer), resolve({ code, out })));
  });
}

describe('runService', () => {
  it('prints the help with the options and settings, and exits 0', async () => {
    const r = await run('ok', { args: ['--help'] });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Usage: fixture \[options\]/);
    expect(r.out).toMatch(/--greeting <text>/);
    expect(r.out).toMatch(/Settings: FIXTURE=/);
  });

  it('passes the options to start, stops on SIGTERM and exits 0', async () => {
    const r = await run('ok', { signal: 'SIGTERM', args: ['--greeting', 'hi'] });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/"greeting":"hi"/);
    expect(r.out).toMatch(/"signal":"SIGTERM".*"msg":"stopping"/);
    expect(r.out).toMatch(/fixture stopped/);
  });

  it('exits 1 when the stop throws, saying so', async () => {
    const r = await run('stop-throws', { signal: 'SIGINT' });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/"err":"flush failed".*"msg":"fixture stop failed"/);
  });

  it('exits 1 when the stop overruns its timeout', async () => {
    const r = await run('stop-hangs', { signal: 'SIGTERM' });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/fixture stop failed \(the stop took longer than 300 ms\)/);
  });

  it('exits 2 on a ConfigError, with its message and no stack trace', async () => {
    const r = await run('start-config-error');
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/"level":60.*"msg":"FIXTURE_SETTING must be set"/);
    expect(r.out).not.toMatch(/at .*run-service/);
  });

  it('exits 2 on a setting that does not parse, before anything starts', async () => {
    const r = await new Promise<Run>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', 'test/support/run-service-fixture.ts'], { cwd: REPO_ROOT, env: { ...process.env, SERVING_PORT: 'abc' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      p.on('exit', (code) => resolve({ code, out }));
    });
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/SERVING_PORT must be an integer/);
  });

  it('exits 1 when the start throws anything else', async () => {
    const r = await run('start-throws');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/could not connect.*"msg":"fixture failed"/);
  });

  it('ends with the service: 0 when it ends by itself, 1 when it fails', async () => {
    expect((await run('ends')).code).toBe(0);
    const failed = await run('fails');
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/worker crashed/);
  });
});
