/**
 * Property-based fuzzing of both HTTP services from their own OpenAPI
 * documents (schemathesis), against the real running services: every operation
 * gets at least 200 generated requests (valid, invalid, without the key) with a
 * fixed seed, and the run must find no 5xx, no undocumented status code, and no
 * reply that violates its declared schema or content type.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisClient } from '../../common/clients';
import { config, type Config } from '../../common/config';
import { BUCKET_MS, bucketStart } from '../../common/contract';
import { hourId } from '../../common/lake';
import { ensureSchemathesis } from '../../infra/schemathesis';
import { jobContext } from '../../batch-layer/jobs';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';
import { lambdaFixture } from './serving-support';

const SEED = '20261130';
const EXAMPLES = '200';
const CHECKS = 'not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth';

/*
 * Every warning but missing_test_data and low_valid_rate for the query API: GET /v1/users/{user_id}/features
 * answers 404 to the generated ids (nobody has them), by contract; active_users' `country` applies only per
 * day (a 400 otherwise), a dependency between parameters OpenAPI 3.0 cannot state, so most generated
 * combinations are refused. Those 404 and 400 replies are still checked against their schemas.
 */
const QUERY_API_WARNINGS = [
  'missing_auth',
  'base_url_mismatch',
  'validation_mismatch',
  'missing_deserializer',
  'unused_openapi_auth',
  'unsupported_regex',
  'method_not_allowed',
  'constants_extraction',
  'unmatched_filter',
  'unresolvable_reference',
  'rate_limited',
  'dictionary_mismatch',
].join(',');

function schemathesis(st: string, url: string, key: string, extra: string[] = []): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const args = ['run', `${url}/openapi.json`, '-H', `x-api-key: ${key}`, '--checks', CHECKS, '-n', EXAMPLES, '--seed', SEED, '--workers', '1', '--no-color', '--request-timeout', '30', ...extra];
    // Its working directory is where it keeps its cassettes (.schemathesis/): a scratch folder, not the repository.
    const p = spawn(st, args, { cwd: os.tmpdir(), env: { ...process.env, SCHEMATHESIS_TELEMETRY: 'false', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 15 * 60_000);
    p.on('exit', (code) => (clearTimeout(timer), resolve({ code, out })));
  });
}

/** The summary and every failure block, for the assertion message. */
const report = (out: string) => out.slice(Math.max(0, out.indexOf('FAILURES') - 40)).slice(0, 20_000) || out.slice(-4000);

describe('fuzzing from the OpenAPI documents', () => {
  let cfg: Config;
  let st: string;
  let serving: Serving;
  let collector: Collector;
  let collectorUrl: string;

  beforeAll(async () => {
    st = ensureSchemathesis(config(), (l) => process.stderr.write(`[fuzz] ${l}\n`));
    // The fuzzer holds the admin key: what it pins stays in this test's own bucket and prefix, the
    // erasures it requests in its own task queue and workflow ids (no worker: afterAll ends them).
    cfg = await isolatedConfig('fuzz', { TEMPORAL_WORKFLOW_ID_PREFIX: `fuzz-${process.pid}-`, SERVING_API_KEYS: 'fuzz-read', SERVING_ADMIN_KEYS: 'fuzz-admin', COLLECTOR_API_KEYS: 'fuzz-ingest', SERVING_RATE_LIMIT_PER_MIN: '1000000', SERVING_ANONYMOUS_RATE_LIMIT_PER_MIN: '1000000', COLLECTOR_ANONYMOUS_RATE_LIMIT_PER_MIN: '1000000' });
    // Published batch views, so generated queries reach DuckDB and not only empty tables.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fuzz-'));
    const start = bucketStart(Date.now(), 'day') - BUCKET_MS.day;
    const fixture = lambdaFixture(cfg, jobContext(cfg, pino({ level: 'silent' })), tmp, { seed: 11, users: 12, startMs: start, endMs: start + 2 * BUCKET_MS.hour, now: Date.now() });
    for (const t of [start, start + BUCKET_MS.hour]) await fixture.publishHour(hourId(t));
    serving = await startServing(cfg, { port: 0, host: '127.0.0.1', log: pino({ level: 'silent' }) });
    expect(serving.store.watermark().hourly.end).toBe(start + 2 * BUCKET_MS.hour);
    collector = buildCollector({ ...cfg, collector: { ...cfg.collector, host: '127.0.0.1', port: 0 } }, { log: pino({ level: 'silent' }) as never });
    collectorUrl = await collector.start();
    for (let i = 0; i < 100 && collector.sink.state !== 'up'; i++) await new Promise((r) => setTimeout(r, 100));
  }, 20 * 60_000);

  afterAll(async () => {
    await serving?.stop();
    await collector?.stop();
    if (cfg) {
      const temporal = new Client({ connection: await Connection.connect({ address: cfg.temporal.address }), namespace: cfg.temporal.namespace });
      for await (const w of temporal.workflow.list({ query: `TaskQueue = '${cfg.temporal.taskQueue}' AND ExecutionStatus = 'Running'` })) {
        await temporal.workflow.getHandle(w.workflowId, w.runId).terminate('fuzz test over').catch(() => undefined);
      }
      await temporal.connection.close();
    }
    const redis = redisClient(cfg);
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  it('the query API: no 5xx, every reply as documented', async () => {
    const r = await schemathesis(st, serving.url, 'fuzz-admin', ['--warnings', QUERY_API_WARNINGS]);
    expect(r.out).toMatch(/Tested: 21/);
    expect(r.code, report(r.out)).toBe(0);
    expect(r.out).toMatch(/No issues found/);
  }, 15 * 60_000);

  it('the collector: no 5xx, every reply as documented', async () => {
    const r = await schemathesis(st, collectorUrl, 'fuzz-ingest');
    expect(r.out).toMatch(/Tested: 1\b/);
    expect(r.code, report(r.out)).toBe(0);
    expect(r.out).toMatch(/No issues found/);
  }, 15 * 60_000);
});
