/**
 * Who may reach what, on the real services: the serving layer (Redis + MinIO)
 * and the collector (Kafka). Every protected route is tried through every path
 * trick a router might decode differently from a URL check — percent-encoding
 * of each character, double encoding, case, `//`, trailing slash, `..`, `;`
 * parameters — and with HEAD and OPTIONS, without a key and with a key of the
 * wrong scope. None may reach its handler.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaClient, redisClient, s3Client } from '../../common/clients';
import { REPO_ROOT, type Config } from '../../common/config';
import { keyIdOf } from '../../common/http/auth';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { listObjects } from '../../common/lake-io';
import { BatchStore } from '../../serving-layer/batch-store';
import { buildServer } from '../../serving-layer/server';
import { startServing, type Serving } from '../../serving-layer/service';
import { dropIsolated, isolatedConfig } from '../support/isolated';

const READ = 'it-read-key';
const ADMIN = 'it-admin-key';
const INGEST = 'it-ingest-key';

interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** A request with the path exactly as given: no URL parser in between to normalise it. */
function raw(base: string, method: string, rawPath: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: rawPath, agent: false, headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
    });
    // Node's HTTP parser answers a request line it cannot read with a bare 400 and closes (a HEAD client then
    // fails to parse that reply):
    // the request reached no route, which is what the callers check.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code?.startsWith('HPE_') ? resolve({ status: 0, body: `connection closed: ${err.message}`, headers: {} }) : reject(err)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const hex = (c: string) => c.charCodeAt(0).toString(16).padStart(2, '0');

/** Spellings of `path` that a decoding router and a raw-URL check could disagree on. */
export function pathVariants(path: string): string[] {
  const out = new Set<string>();
  for (let i = 1; i < path.length; i++) {
    const c = path[i];
    const before = path.slice(0, i);
    const after = path.slice(i + 1);
    out.add(`${before}%${hex(c).toUpperCase()}${after}`);
    out.add(`${before}%${hex(c).toLowerCase()}${after}`);
    out.add(`${before}%25${hex(c)}${after}`); // double encoding
    if (/[a-z]/.test(c)) out.add(`${before}${c.toUpperCase()}${after}`);
  }
  const segments = path.split('/').filter(Boolean);
  out.add(path.toUpperCase());
  out.add(`/${path}`);
  out.add(path.replace('/v1/', '/v1//'));
  out.add(`${path}/`);
  out.add(`${path}//`);
  out.add(`/${segments[0]}/./${segments.slice(1).join('/')}`);
  out.add(`/${segments[0]}/x/../${segments.slice(1).join('/')}`);
  out.add(`/${segments[0]}/%2e%2e/${segments[0]}/${segments.slice(1).join('/')}`);
  out.add(`/x/..${path}`);
  out.add(`${path};a=b`);
  out.add(`/${segments[0]};x=1/${segments.slice(1).join('/')}`);
  out.add(`${path}%00`);
  out.add(`${path}%20`);
  out.add(`${path}?x-api-key=${READ}`);
  out.add(`${path}#frag`);
  out.add(path.replaceAll('/', '%2f'));
  out.add(path.replaceAll('/', '%2F'));
  out.add(path.replace(/^\/v1/, '/v1%2f').replace('%2f/', '%2f'));
  out.add(path); // the route itself: without its key it must be refused too
  return [...out];
}

const noKeyHeaders: Array<Record<string, string>> = [{}, { 'x-api-key': '' }, { 'x-api-key': ' ' }, { 'x-api-key': 'nope' }, { authorization: `Bearer ${READ}x` }];

describe('serving layer: authorization is decided on the matched route', () => {
  let cfg: Config;
  let serving: Serving;

  beforeAll(async () => {
    cfg = await isolatedConfig('sec-serving', {
      SERVING_API_KEYS: READ,
      SERVING_ADMIN_KEYS: ADMIN,
      // This file counts refusals, not rate limits: a separate test proves the limits.
      SERVING_ANONYMOUS_RATE_LIMIT_PER_MIN: '1000000',
      SERVING_RATE_LIMIT_PER_MIN: '1000000',
    });
    serving = await startServing(cfg, { port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await serving?.stop();
    const redis = redisClient(cfg);
    await dropIsolated(cfg, redis);
    redis.disconnect();
  });

  const readRoutes = [
    '/v1/metrics/events',
    '/v1/metrics/active_users',
    '/v1/metrics/playback',
    '/v1/metrics/top_content',
    '/v1/metrics/daily_sessions',
    '/v1/metrics/retention',
    '/v1/metrics/clicks_to_play',
    '/v1/metrics/top_paths',
    '/v1/metrics/binge_users',
    '/v1/metrics/obt',
    '/v1/metrics/lifecycle',
    '/v1/metrics/churn_risk',
    // Its steps are required: the control's request carries them.
    '/v1/metrics/funnel?steps=page_view,click',
    '/v1/metrics/funnels',
    '/v1/metrics/no_such_metric',
    '/v1/users/no_such_user/features',
    '/v1/freshness',
    '/v1/alerts',
  ];

  it('every protected route answers with its key (the control: the variants below would reach it)', async () => {
    for (const p of readRoutes) {
      const res = await raw(serving.url, 'GET', `${p}${p.includes('?') ? '&' : '?'}granularity=day`, { 'x-api-key': READ });
      expect({ p, status: res.status }).toEqual({ p, status: p.includes('/no_such_') ? 404 : 200 });
    }
    // Every /v1 route of the server is in the list above or is an admin route: a new route must be added here.
    const routes = serving.app.printRoutes({ commonPrefix: false });
    for (const m of routes.matchAll(/(\/v1\/[\w/:]+)/g)) {
      const r = m[1].replace(':metric', 'no_such_metric').replace(':user_id', 'no_such_user');
      expect([...readRoutes.map((x) => x.split('?')[0]), ...adminRoutes]).toContain(r);
    }
  });

  const adminRoutes = ['/v1/admin/watermark', '/v1/admin/erasures', '/v1/admin/erasures/:id'];

  it('the erasure routes refuse no key and read keys through any variant, and start nothing', async () => {
    const reached: string[] = [];
    const body = JSON.stringify({ users: ['user-who-must-stay'] });
    const attempts: [string, string, string | undefined][] = [
      ['POST', '/v1/admin/erasures', body],
      ['GET', '/v1/admin/erasures/er-0123456789abcdef', undefined],
    ];
    for (const [method, p, payload] of attempts) {
      for (const v of pathVariants(p)) {
        for (const h of [...noKeyHeaders, { 'x-api-key': READ }, { authorization: `Bearer ${ADMIN}` }]) {
          const res = await raw(serving.url, method, v, { ...h, ...(payload ? { 'content-type': 'application/json' } : {}) }, payload);
          if ((res.status >= 200 && res.status < 300) || /request_id|workflow/.test(res.body)) reached.push(`${method} ${v} ${JSON.stringify(h)} -> ${res.status}`);
        }
      }
    }
    expect(reached).toEqual([]);
    // The control: with the admin key the same requests reach the routes (a malformed body is refused before Temporal).
    const bad = await raw(serving.url, 'POST', '/v1/admin/erasures', { 'x-api-key': ADMIN, 'content-type': 'application/json' }, JSON.stringify({ users: [] }));
    expect(bad.status).toBe(400);
    const unknown = await raw(serving.url, 'GET', '/v1/admin/erasures/er-0123456789abcdef', { 'x-api-key': ADMIN });
    expect(unknown.status).toBe(404);
  });

  it('no read route is reached without a key, through any path variant or method', async () => {
    const reached: string[] = [];
    for (const p of readRoutes) {
      for (const v of pathVariants(p)) {
        for (const method of ['GET', 'HEAD']) {
          for (const h of noKeyHeaders) {
            const res = await raw(serving.url, method, v.includes('?') ? `${v}&granularity=day` : `${v}?granularity=day`, h);
            if ((res.status >= 200 && res.status < 300) || /"series"|"watermark"|"alerts"/.test(res.body)) reached.push(`${method} ${v} ${JSON.stringify(h)} -> ${res.status}`);
          }
        }
      }
      // A CORS preflight is answered without a key, and without data.
      const pre = await raw(serving.url, 'OPTIONS', p, { origin: 'https://x.example', 'access-control-request-method': 'GET' });
      expect(pre.body).not.toMatch(/series|watermark/);
    }
    expect(reached).toEqual([]);
  });

  it('the admin route refuses no key and read keys through any variant, and the pin never moves', async () => {
    const reached: string[] = [];
    const body = JSON.stringify({ pinned_end: 1000 });
    for (const v of pathVariants('/v1/admin/watermark')) {
      for (const h of [...noKeyHeaders, { 'x-api-key': READ }, { authorization: `Bearer ${ADMIN}` }]) {
        const res = await raw(serving.url, 'PUT', v, { ...h, 'content-type': 'application/json' }, body);
        if (res.status >= 200 && res.status < 300) reached.push(`PUT ${v} ${JSON.stringify(h)} -> ${res.status}`);
      }
    }
    expect(reached).toEqual([]);
    const fresh = await raw(serving.url, 'GET', '/v1/freshness', { 'x-api-key': READ });
    expect(JSON.parse(fresh.body).watermark.pinned_end).toBeNull();
    // The S3 side agrees: no pin, no audit record.
    const lake = await listObjects(s3Client(cfg), cfg.s3.bucket, '_manifests/');
    expect(lake.filter((o) => /pin|audit/.test(o.key))).toEqual([]);
  });

  it('an admin pin leaves an audit record naming the key id, never the key, in the log and the lake', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const log = pino({ level: 'info' }, sink);
    const store = await BatchStore.open(cfg, s3Client(cfg), log);
    const redis = redisClient(cfg);
    const app = await buildServer(cfg, { redis, store, log });
    try {
      const res = await app.inject({ method: 'PUT', url: '/v1/admin/watermark', headers: { 'x-api-key': ADMIN, 'x-request-id': 'audit-test-1' }, payload: { pinned_end: 3_600_000 } });
      expect(res.statusCode).toBe(200);
      const audit = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.audit === 'watermark.pin');
      expect(audit).toMatchObject({ keyId: keyIdOf(ADMIN), requestId: 'audit-test-1', pinnedEnd: 3_600_000 });
      expect(typeof audit!.at).toBe('string');
      expect(lines.join('')).not.toContain(ADMIN);
      const objects = await listObjects(s3Client(cfg), cfg.s3.bucket, '_manifests/');
      const records = objects.filter((o) => o.key.includes('audit'));
      expect(records.length).toBe(1);
      const { getJson } = await import('../../common/lake-io');
      const rec = await getJson<Record<string, unknown>>(s3Client(cfg), cfg.s3.bucket, records[0].key);
      expect(JSON.stringify(rec)).toContain(keyIdOf(ADMIN));
      expect(JSON.stringify(rec)).toContain('audit-test-1');
      expect(JSON.stringify(rec)).not.toContain(ADMIN);
      // Clear the pin again for the other tests.
      expect((await app.inject({ method: 'PUT', url: '/v1/admin/watermark', headers: { 'x-api-key': ADMIN }, payload: { pinned_end: null } })).statusCode).toBe(200);
    } finally {
      await app.close();
      await store.close();
      redis.disconnect();
    }
  });
});

describe('serving layer: rate limits, errors, production settings', () => {
  let cfg: Config;
  beforeAll(async () => {
    cfg = await isolatedConfig('sec-limits', { SERVING_API_KEYS: `${READ},${READ}-2`, SERVING_ADMIN_KEYS: ADMIN, SERVING_ANONYMOUS_RATE_LIMIT_PER_MIN: '5', SERVING_RATE_LIMIT_PER_MIN: '8' });
  });

  it('limits failed attempts per client address and valid keys per key id', async () => {
    const store = await BatchStore.open(cfg, s3Client(cfg), pino({ level: 'silent' }));
    const redis = redisClient(cfg);
    const app = await buildServer(cfg, { redis, store });
    try {
      const get = (h: Record<string, string>) => app.inject({ url: '/v1/freshness', headers: h });
      // Guessing keys: five wrong ones are 401, the sixth is throttled whatever key it tries.
      for (let i = 0; i < 5; i++) expect((await get({ 'x-api-key': `guess-${i}` })).statusCode).toBe(401);
      expect((await get({ 'x-api-key': 'guess-6' })).statusCode).toBe(429);
      expect((await get({})).statusCode).toBe(429);
      // A valid key has its own budget, not the address's…
      for (let i = 0; i < 8; i++) expect((await get({ 'x-api-key': READ })).statusCode).toBe(200);
      const limited = await get({ 'x-api-key': READ });
      expect(limited.statusCode).toBe(429);
      expect(limited.json()).toMatchObject({ error: 'rate_limited' });
      // …and another key from the same address another one.
      expect((await get({ 'x-api-key': `${READ}-2` })).statusCode).toBe(200);
      // Unprotected routes are not limited.
      expect((await app.inject({ url: '/health' })).statusCode).not.toBe(429);
    } finally {
      await app.close();
      await store.close();
      redis.disconnect();
    }
  });

  it('refuses a pin or a time beyond year 9999 (found by the fuzzer: a pin of 1.5e38 broke every reply schema)', async () => {
    const store = await BatchStore.open(cfg, s3Client(cfg), pino({ level: 'silent' }));
    const redis = redisClient(cfg);
    const app = await buildServer(cfg, { redis, store });
    try {
      const pin = await app.inject({ method: 'PUT', url: '/v1/admin/watermark', payload: '{"pinned_end":1.4933395172136595e+38}', headers: { 'x-api-key': ADMIN, 'content-type': 'application/json' } });
      expect(pin.statusCode).toBe(400);
      expect(pin.json()).toMatchObject({ parameter: 'pinned_end' });
      expect(store.watermark().pinnedEnd).toBeNull();
      const far = await app.inject({ url: '/v1/metrics/events?granularity=day&from=99999999999999999', headers: { 'x-api-key': ADMIN } });
      expect(far.statusCode).toBe(400);
      expect(far.json()).toMatchObject({ parameter: 'from' });
    } finally {
      await app.close();
      await store.close();
      redis.disconnect();
    }
  });

  it('a failing dependency answers 503 with a request id, and its message stays in the log', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
    const store = await BatchStore.open(cfg, s3Client(cfg), pino({ level: 'silent' }));
    // A Redis that is not there (nothing listens on port 1).
    const dead = redisClient({ ...cfg, redis: { ...cfg.redis, url: 'redis://127.0.0.1:1' } });
    dead.on('error', () => {});
    const app = await buildServer(cfg, { redis: dead, store, log });
    try {
      // A metric answers from batch with the speed buckets `none` while Redis is away (issue 16); a user's
      // features have only the speed layer's state to answer from.
      const res = await app.inject({ url: '/v1/users/u1/features', headers: { 'x-api-key': ADMIN } });
      expect(res.statusCode).toBe(503);
      const body = res.json() as { error: string; message: string; request_id: string };
      expect(body.error).toBe('unavailable');
      expect(body.request_id).toBe(res.headers['x-request-id']);
      expect(res.body).not.toMatch(/ECONNREFUSED|127\.0\.0\.1:1|Redis|MaxRetries|stack/i);
      const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.requestId === body.request_id);
      expect(String(logged?.err)).toMatch(/ECONNREFUSED|max retries|Connection is closed|Reached the max retries/i);
    } finally {
      await app.close();
      await store.close();
      dead.disconnect();
    }
  });

  it('refuses to start in production with the development settings, naming them', async () => {
    const run = (script: string, env: Record<string, string>) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (out += d.toString()));
        const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
        p.on('exit', (code) => (clearTimeout(timer), resolve({ code, out })));
      });
    const serving = await run('serving-layer/main.ts', { NODE_ENV: 'production', SERVING_PORT: '0', LOG_LEVEL: 'info' });
    expect(serving.code).toBe(2);
    expect(serving.out).toMatch(/SERVING_API_KEYS[\s\S]*dev-read-key/);
    expect(serving.out).toMatch(/SERVING_CORS_ORIGINS/);
    expect(serving.out).toMatch(/ALLOW_INSECURE_SETTINGS/);
    const collector = await run('ingestion/collector/main.ts', { NODE_ENV: 'production', COLLECTOR_PORT: '0', LOG_LEVEL: 'info' });
    expect(collector.code).toBe(2);
    expect(collector.out).toMatch(/COLLECTOR_API_KEYS[\s\S]*dev-ingest-key/);
    expect(collector.out).toMatch(/COLLECTOR_HOST=0\.0\.0\.0/);
  });
});

describe('collector: only an ingestion key reaches the events route', () => {
  let cfg: Config;
  let collector: Collector;
  let url: string;

  beforeAll(async () => {
    cfg = await isolatedConfig('sec-collector', { COLLECTOR_API_KEYS: INGEST, COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0', COLLECTOR_ANONYMOUS_RATE_LIMIT_PER_MIN: '1000000' });
    collector = buildCollector(cfg, { log: pino({ level: 'silent' }) as never });
    url = await collector.start();
    for (let i = 0; i < 100 && collector.sink.state !== 'up'; i++) await new Promise((r) => setTimeout(r, 100));
  });
  afterAll(async () => {
    await collector?.stop();
  });

  const event = () => JSON.stringify({ event_id: `e-${Math.random()}`, event_type: 'click', user_id: 'u1', timestamp: Date.now() });

  it('no variant of the path or the key header writes an event', async () => {
    const reached: string[] = [];
    for (const v of pathVariants('/v1/events')) {
      for (const h of [...noKeyHeaders, { 'x-api-key': READ }, { authorization: 'Basic aXQtaW5nZXN0LWtleQ==' }]) {
        const res = await raw(url, 'POST', v, { ...h, 'content-type': 'application/json' }, event());
        if ((res.status >= 200 && res.status < 300) || res.body.includes('"accepted"')) reached.push(`POST ${v} ${JSON.stringify(h)} -> ${res.status}`);
      }
    }
    expect(reached).toEqual([]);
    // Kafka agrees: nothing reached either topic.
    const admin = kafkaClient(cfg, 'sec-check').admin();
    await admin.connect();
    for (const topic of [cfg.kafka.rawTopic, cfg.kafka.dlqTopic]) {
      const offsets = await admin.fetchTopicOffsets(topic);
      expect({ topic, written: offsets.reduce((n, o) => n + Number(o.high), 0) }).toEqual({ topic, written: 0 });
    }
    await admin.disconnect();
    // The control: the same request with the key is accepted, by header and by Bearer token.
    expect((await raw(url, 'POST', '/v1/events', { 'x-api-key': INGEST, 'content-type': 'application/json' }, event())).status).toBe(200);
    expect((await raw(url, 'POST', '/v1/events', { authorization: `Bearer ${INGEST}`, 'content-type': 'application/json' }, event())).status).toBe(200);
  });

  it('publishes an OpenAPI document that declares the key', async () => {
    const res = await raw(url, 'GET', '/openapi.json');
    expect(res.status).toBe(200);
    const doc = JSON.parse(res.body) as { paths: Record<string, { post?: { security?: unknown[] } }> };
    expect(doc.paths['/v1/events'].post?.security).toEqual([{ apiKey: [] }]);
  });

  it('parses application/json-seq per RFC 7464', async () => {
    const a = JSON.parse(event());
    const body = `\x1e${JSON.stringify(a)}\n\x1e{"broken":\n`;
    const res = await raw(url, 'POST', '/v1/events', { 'x-api-key': INGEST, 'content-type': 'application/json-seq' }, body);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ accepted: 1, rejected: 1, results: [{ status: 'accepted', event_id: a.event_id }, { status: 'rejected', reason: 'malformed_json' }] });
  });

  it('bounds the bytes in progress, malformed bodies included', async () => {
    const small = buildCollector({ ...cfg, collector: { ...cfg.collector, maxInFlightBytes: 1024 } }, { log: pino({ level: 'silent' }) as never });
    const smallUrl = await small.start();
    try {
      for (let i = 0; i < 100 && small.sink.state !== 'up'; i++) await new Promise((r) => setTimeout(r, 100));
      const big = `[${Array.from({ length: 20 }, () => event()).join(',')}]`;
      expect(big.length).toBeGreaterThan(1024);
      const res = await raw(smallUrl, 'POST', '/v1/events', { 'x-api-key': INGEST, 'content-type': 'application/json' }, big);
      expect(res.status).toBe(429);
      expect(JSON.parse(res.body).message).toMatch(/bytes in progress/);
      const malformed = await raw(smallUrl, 'POST', '/v1/events', { 'x-api-key': INGEST, 'content-type': 'application/json' }, `{"x":"${'a'.repeat(2000)}`);
      expect(malformed.status).toBe(429);
      expect((await raw(smallUrl, 'POST', '/v1/events', { 'x-api-key': INGEST, 'content-type': 'application/json' }, event())).status).toBe(200);
    } finally {
      await small.stop();
    }
  });
});
