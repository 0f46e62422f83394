/**
 * The collector against the real Kafka: what it answers, and what it wrote to
 * events.raw and events.dlq (read back with a consumer), for every error path.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Partitioners, type Consumer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../common/config';
import { kafkaClient } from '../../common/clients';
import type { DeadLetter, EventRecord } from '../../common/contract';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { simulate } from '../../ingestion/simulator/generate';
import { isolatedConfig } from '../support/isolated';

const KEY = 'it-key';
const run = randomBytes(3).toString('hex');
const NOW = Date.now();

interface Seen {
  key: string;
  value: string;
  partition: number;
}

/** Everything written to the two topics, collected by one consumer for the whole file. */
class Tap {
  raw: Seen[] = [];
  dlq: Seen[] = [];
  private consumer!: Consumer;
  constructor(private readonly cfg: Config) {}

  async start(): Promise<void> {
    this.consumer = kafkaClient(this.cfg, `tap-${run}`).consumer({ groupId: `tap-${run}-${randomBytes(2).toString('hex')}` });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [this.cfg.kafka.rawTopic, this.cfg.kafka.dlqTopic], fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const seen = { key: message.key!.toString(), value: message.value!.toString(), partition };
        (topic === this.cfg.kafka.rawTopic ? this.raw : this.dlq).push(seen);
      },
    });
  }

  records(pred: (r: EventRecord) => boolean): EventRecord[] {
    return this.raw.map((m) => JSON.parse(m.value) as EventRecord).filter(pred);
  }

  letters(pred: (d: DeadLetter) => boolean): DeadLetter[] {
    return this.dlq.map((m) => JSON.parse(m.value) as DeadLetter).filter(pred);
  }

  async until(what: string, done: () => boolean, timeoutMs = 20_000): Promise<void> {
    const t0 = Date.now();
    while (!done()) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

let cfg: Config;
let collector: Collector;
let base: string;
let tap: Tap;

async function post(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': KEY, ...headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text.startsWith('{') ? JSON.parse(text) : text };
}

async function untilUp(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${url}/health`).catch(() => undefined);
    if (res?.status === 200) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('collector never became healthy');
}

const ev = (id: string, extra: Record<string, unknown> = {}) => ({
  event_id: `${run}-${id}`,
  event_type: 'video_play',
  user_id: `user-${run}-${id}`,
  session_id: `sess-${id}`,
  timestamp: NOW - 60_000,
  schema_version: 1,
  properties: { content_id: 'movie_7', device_type: 'smart_tv', playback_position: 0 },
  context: { location: 'BR-SP', app_version: '8.41.0' },
  ...extra,
});

/** A valid event for the given user, sent after a request; once it is in Kafka, so is anything before it on its partition. */
async function sentinel(user: string): Promise<string> {
  const id = `${run}-sentinel-${randomBytes(3).toString('hex')}`;
  const res = await post(base, JSON.stringify({ ...ev('s'), event_id: id, user_id: user }));
  expect(res.body.accepted).toBe(1);
  await tap.until(`sentinel ${id}`, () => tap.records((r) => r.event_id === id).length === 1);
  return id;
}

beforeAll(async () => {
  cfg = await isolatedConfig('collector', {
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_PORT: '0',
    COLLECTOR_API_KEYS: `other-key,${KEY}`,
    COLLECTOR_MAX_EVENT_BYTES: '4096',
  });
  collector = buildCollector(cfg);
  base = (await collector.start()).replace('[::1]', '127.0.0.1');
  await untilUp(base);
  tap = new Tap(cfg);
  await tap.start();
});

afterAll(async () => {
  await tap?.stop();
  await collector?.stop();
});

describe('POST /v1/events with a JSON array', () => {
  it('answers per event and writes valid events to events.raw, invalid ones to events.dlq with their original text', async () => {
    const valid = [ev('a'), ev('b', { context: { location: 'XYZ' }, properties: {} }), ev('c', { experiment: { arm: 'B' } })];
    // Original element texts with odd spacing, to prove the dead letter carries the bytes as sent.
    const invalidTexts = [
      '42',
      `{ "event_id" : "${run}-x1", "event_type": "video_play", "timestamp": ${NOW} }`,
      `{"event_id":"${run}-x2","event_type":"click","user_id":"u","timestamp":${NOW},"schema_version":3}`,
      `{"event_id":"${run}-x3","event_type":"click","user_id":"u","timestamp":946684799999}`,
      `{"event_id":"${run}-x4","event_type":"click","user_id":"u","timestamp":${NOW + 3_600_000}}`,
      JSON.stringify({ ...ev('x5'), properties: { note: 'n'.repeat(5000) } }),
    ];
    const texts = [...valid.map((v) => JSON.stringify(v)), JSON.stringify(valid[0]), ...invalidTexts];
    const res = await post(base, `[\n  ${texts.join(' ,\n  ')}\n]`);

    expect(res.status).toBe(200);
    expect(res.body.accepted).toBe(4);
    expect(res.body.rejected).toBe(6);
    expect(res.body.results.map((r: { status: string; reason?: string }) => r.reason ?? r.status)).toEqual([
      'accepted', 'accepted', 'accepted', 'accepted',
      'not_an_object', 'schema_violation', 'unknown_schema_version', 'timestamp_out_of_range', 'timestamp_out_of_range', 'size_violation',
    ]);
    expect(res.body.results[3]).toEqual({ index: 3, event_id: `${run}-a`, status: 'accepted' });
    expect(res.body.results[5]).toMatchObject({ index: 5, event_id: `${run}-x1`, status: 'rejected', detail: 'user_id is required' });

    const mine = (r: EventRecord) => r.event_id.startsWith(`${run}-`) && !r.event_id.includes('sentinel');
    await tap.until('4 raw records', () => tap.records(mine).length >= 4);
    const raw = tap.raw.filter((m) => mine(JSON.parse(m.value)));
    expect(raw).toHaveLength(4);
    for (const m of raw) expect(m.key).toBe(JSON.parse(m.value).user_id);
    const records = raw.map((m) => JSON.parse(m.value) as EventRecord);
    expect(records.filter((r) => r.event_id === `${run}-a`)).toHaveLength(2); // the duplicate is kept: the batch layer de-duplicates
    const a = records.find((r) => r.event_id === `${run}-a`)!;
    expect(a).toMatchObject({ device_type: 'smart_tv', country: 'BR', app_version: '8.41.0', content_id: 'movie_7', ts: NOW - 60_000, session_id: 'sess-a' });
    expect(a.received_at).toBeGreaterThanOrEqual(NOW);
    expect(records.find((r) => r.event_id === `${run}-b`)).toMatchObject({ device_type: 'unknown', country: 'unknown', content_id: null });
    expect(records.find((r) => r.event_id === `${run}-c`)!.extra).toEqual({ experiment: { arm: 'B' } });

    await tap.until('6 dead letters', () => tap.letters((d) => d.index !== undefined && invalidTexts.includes(d.raw)).length >= 6);
    const letters = tap.dlq.filter((m) => invalidTexts.includes((JSON.parse(m.value) as DeadLetter).raw));
    expect(letters).toHaveLength(6);
    for (const m of letters) {
      const d = JSON.parse(m.value) as DeadLetter;
      expect(m.key).toBe(d.reason);
      expect(d.raw).toBe(texts[d.index!]);
      expect(res.body.results[d.index!].reason).toBe(d.reason);
      expect(d.detail.length).toBeGreaterThan(5);
      expect(d.received_at).toBeGreaterThanOrEqual(NOW);
    }
  });

  it('accepts a single JSON object and Authorization: Bearer', async () => {
    const res = await post(base, JSON.stringify(ev('single')), { 'x-api-key': '', authorization: `Bearer ${KEY}` });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ accepted: 1, rejected: 0, results: [{ index: 0, event_id: `${run}-single`, status: 'accepted' }] });
    await tap.until('the single event', () => tap.records((r) => r.event_id === `${run}-single`).length === 1);
  });
});

describe('partitioning', () => {
  it('writes every user to the partition kafkajs\' default partitioner picked, across the lanes', async () => {
    const users = Array.from({ length: 300 }, (_, i) => `p-${run}-${i}`);
    const res = await post(base, JSON.stringify(users.map((u, i) => ({ ...ev(`part${i}`), user_id: u }))));
    expect(res.body.accepted).toBe(users.length);
    const admin = kafkaClient(cfg, `part-${run}`).admin();
    await admin.connect();
    const [meta] = (await admin.fetchTopicMetadata({ topics: [cfg.kafka.rawTopic] })).topics;
    await admin.disconnect();
    expect(meta.partitions.length).toBeGreaterThan(1);
    const partitioner = Partitioners.DefaultPartitioner();
    const partitionMetadata = meta.partitions.map((p) => ({ ...p, replicas: p.replicas ?? [], isr: p.isr ?? [] }));
    await tap.until('300 raw records', () => tap.records((r) => r.event_id.startsWith(`${run}-part`)).length >= users.length);
    const seen = tap.raw.filter((m) => m.key.startsWith(`p-${run}-`));
    expect(seen).toHaveLength(users.length);
    for (const m of seen) expect(m.partition, m.key).toBe(partitioner({ topic: cfg.kafka.rawTopic, partitionMetadata, message: { key: m.key, value: null } }));
    expect(new Set(seen.map((m) => m.partition)).size).toBe(meta.partitions.length);
  });
});

describe('POST /v1/events with NDJSON', () => {
  it('rejects a malformed line alone and lets the rest through', async () => {
    const lines = [
      JSON.stringify(ev('n1')),
      `{"event_id":"${run}-broken","event_type":`,
      JSON.stringify(ev('n2')),
      '',
      JSON.stringify({ ...ev('n3'), event_type: 'video_rewind' }),
    ];
    const res = await post(base, lines.join('\r\n') + '\n', { 'content-type': 'application/x-ndjson' });
    expect(res.status).toBe(200);
    expect(res.body.results.map((r: { status: string; reason?: string }) => r.reason ?? r.status)).toEqual([
      'accepted', 'malformed_json', 'accepted', 'schema_violation',
    ]);
    expect(res.body.results[1].detail).toMatch(/column \d+/);
    await tap.until('n1 and n2', () => tap.records((r) => r.event_id === `${run}-n1` || r.event_id === `${run}-n2`).length === 2);
    await tap.until('the malformed line', () => tap.letters((d) => d.raw === lines[1]).length === 1);
    const d = tap.letters((x) => x.raw === lines[1])[0];
    expect(d).toMatchObject({ reason: 'malformed_json', index: 1 });
    expect(tap.letters((x) => x.raw === lines[4])[0]).toMatchObject({ reason: 'schema_violation', index: 3 });
  });

  it('agrees with the simulator on every send: valid accepted, each invalid kind rejected with its reason', async () => {
    const sends = [
      ...simulate({ seed: 1234, users: 20, startMs: NOW - 6 * 3_600_000, endMs: NOW - 60_000, duplicateFraction: 0.1, invalidFraction: 0.1, lateFraction: 0.1 }),
    ].slice(0, 600);
    const expected = sends.map((s) => (s.kind === 'invalid' ? s.expectedReason : 'accepted'));
    expect(new Set(expected).size).toBe(6);
    const res = await post(base, sends.map((s) => s.line).join('\n'), { 'content-type': 'application/x-ndjson' });
    expect(res.status).toBe(200);
    expect(res.body.results.map((r: { status: string; reason?: string }) => r.reason ?? r.status)).toEqual(expected);
    const ids = new Set(sends.filter((s) => s.kind !== 'invalid').map((s) => s.eventId));
    const count = sends.filter((s) => s.kind !== 'invalid').length;
    await tap.until('every simulated event', () => tap.records((r) => ids.has(r.event_id)).length === count);
  });
});

describe('errors', () => {
  it('answers 400 with the line and column of broken JSON, and dead-letters the bytes', async () => {
    const body = `[\n  {"event_id": "${run}-bad", "user_id": },\n  {}\n]`;
    const res = await post(base, body);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'malformed_json', line: 2, column: 41 });
    expect(res.body.message).toMatch(/line 2 column 41/);
    await tap.until('the broken body', () => tap.letters((d) => d.raw === body).length === 1);
    const d = tap.letters((x) => x.raw === body)[0];
    expect(d.reason).toBe('malformed_json');
    expect(d.index).toBeUndefined();
  });

  it('answers 413 to a body over the byte limit and to a batch over the event limit, storing nothing', async () => {
    const user = `user-${run}-big`;
    const big = await post(base, JSON.stringify([{ ...ev('huge'), user_id: user, properties: { pad: 'x'.repeat(cfg.collector.maxBodyBytes) } }]));
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ error: 'body_too_large', limit: cfg.collector.maxBodyBytes });
    expect(big.body.message).toMatch(/COLLECTOR_MAX_BODY_BYTES/);

    const many = Array.from({ length: cfg.collector.maxBatchEvents + 1 }, (_, i) => ({ ...ev(`many${i}`), user_id: user }));
    const res = await post(base, JSON.stringify(many));
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ error: 'batch_too_large', limit: cfg.collector.maxBatchEvents });
    expect(res.body.message).toMatch(/1001 events/);
    const nd = await post(base, many.map((e) => JSON.stringify(e)).join('\n'), { 'content-type': 'application/x-ndjson' });
    expect(nd.status).toBe(413);

    await sentinel(user); // same user => same partition, so anything sent before it would be there by now
    expect(tap.records((r) => r.user_id === user && !r.event_id.includes('sentinel'))).toHaveLength(0);
  });

  it('answers 401 without a valid API key, before reading the body', async () => {
    const none = await post(base, JSON.stringify(ev('noauth')), { 'x-api-key': '' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(none.body.message).toMatch(/x-api-key/);
    const wrong = await post(base, JSON.stringify(ev('noauth')), { 'x-api-key': 'it-kez' });
    expect(wrong.status).toBe(401);
    expect(wrong.body.message).toMatch(/not valid/);
    const bearerWrong = await post(base, JSON.stringify(ev('noauth')), { 'x-api-key': '', authorization: 'Bearer nope' });
    expect(bearerWrong.status).toBe(401);
  });

  it('answers 415 to an unsupported content type', async () => {
    const res = await post(base, 'hello', { 'content-type': 'text/csv' });
    expect(res.status).toBe(415);
    expect(res.body.error).toBe('unsupported_media_type');
  });

  it('answers 429 when its in-flight buffer is full, and stores none of the refused events', async () => {
    const small = loadConfig({ ...process.env, ...envOf(cfg), COLLECTOR_MAX_IN_FLIGHT_EVENTS: '5', COLLECTOR_LINGER_MS: '300' });
    const tiny = buildCollector(small);
    const url = (await tiny.start()).replace('[::1]', '127.0.0.1');
    try {
      await untilUp(url);
      const user = `user-${run}-busy`;
      const bodies = Array.from({ length: 6 }, (_, r) => JSON.stringify([0, 1, 2].map((i) => ({ ...ev(`busy${r}-${i}`), user_id: user }))));
      const answers = await Promise.all(bodies.map((b) => post(url, b)));
      const statuses = answers.map((a) => a.status);
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(1);
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(1);
      expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
      const refused = answers.find((a) => a.status === 429)!;
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.body.error).toBe('overloaded');

      await sentinel(user);
      const stored = new Set(tap.records((r) => r.user_id === user).map((r) => r.event_id));
      answers.forEach((a, r) => {
        for (const i of [0, 1, 2]) expect(stored.has(`${run}-busy${r}-${i}`)).toBe(a.status === 200);
      });
    } finally {
      await tiny.stop();
    }
  });
});

describe('Kafka unreachable', () => {
  it('answers 503 with Retry-After, keeps serving /health and /metrics, and never acknowledges', async () => {
    const down = loadConfig({ ...process.env, ...envOf(cfg), KAFKA_BROKERS: '127.0.0.1:1', COLLECTOR_RETRY_AFTER_SEC: '1' });
    const c = buildCollector(down);
    const url = (await c.start()).replace('[::1]', '127.0.0.1');
    try {
      for (let round = 0; round < 3; round++) {
        const res = await post(url, JSON.stringify([ev(`down${round}`)]));
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('1');
        expect(res.body.error).toBe('kafka_unavailable');
        const health = await fetch(`${url}/health`);
        expect(health.status).toBe(503);
        expect((await health.json()).kafka).toMatch(/down|connecting/);
        await new Promise((r) => setTimeout(r, 700));
      }
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/collector_kafka_up 0/);
      expect(metrics).toMatch(/collector_requests_total\{route="\/v1\/events",status="503"\} 3/);
      expect(metrics).not.toMatch(/collector_events_accepted_total [1-9]/);
      // Broken JSON is not answered 400 either while its dead letter cannot be stored.
      expect((await post(url, '{"x":')).status).toBe(503);
    } finally {
      await c.stop();
    }
    expect(tap.records((r) => r.event_id.startsWith(`${run}-down`))).toHaveLength(0);
  });
});

describe('Kafka back', () => {
  it('starts accepting once the broker answers, without a restart', async () => {
    // The collector bootstraps through a port that refuses until a forwarder to the broker opens on it. Below the
    // ephemeral range: connecting again and again to a closed ephemeral port can connect the socket to itself.
    const port = await freePortBelowEphemeral();
    const [bHost, bPort] = cfg.kafka.brokers[0].split(':');
    const forward = net.createServer((client) => {
      const broker = net.connect(Number(bPort), bHost === 'localhost' ? '127.0.0.1' : bHost);
      client.pipe(broker).pipe(client);
      client.on('error', () => broker.destroy());
      broker.on('error', () => client.destroy());
    });
    const later = loadConfig({ ...process.env, ...envOf(cfg), KAFKA_BROKERS: `127.0.0.1:${port}`, COLLECTOR_RETRY_AFTER_SEC: '1' });
    const c = buildCollector(later);
    const url = (await c.start()).replace('[::1]', '127.0.0.1');
    try {
      const refused = await post(url, JSON.stringify([ev('later0')]));
      expect(refused.status).toBe(503);
      await new Promise<void>((r) => forward.listen(port, '127.0.0.1', r));
      let res = refused;
      for (let i = 0; i < 100 && res.status === 503; i++) {
        await new Promise((r) => setTimeout(r, 100));
        res = await post(url, JSON.stringify([ev('later1')]));
      }
      expect(res.status).toBe(200);
      expect(res.body.accepted).toBe(1);
      expect((await (await fetch(`${url}/health`)).json()).kafka).toBe('up');
    } finally {
      await c.stop();
      forward.close();
    }
    await tap.until('the event accepted after the outage', () => tap.records((r) => r.event_id === `${run}-later1`).length >= 1);
    expect(tap.records((r) => r.event_id === `${run}-later0`)).toHaveLength(0);
  });
});

describe('GET /health and /metrics', () => {
  it('reports Kafka up and counts requests, accepted and rejected events', async () => {
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', kafka: 'up' });
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    const accepted = value(/^collector_events_accepted_total (\d+)$/m);
    // Every accepted event of this file went through this collector, except the 429 test's own instance.
    expect(accepted).toBeGreaterThanOrEqual(4 + 1 + 2);
    expect(value(/^collector_events_rejected_total\{reason="size_violation"\} (\d+)$/m)).toBe(1);
    expect(value(/^collector_events_rejected_total\{reason="not_an_object"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^collector_requests_total\{route="\/v1\/events",status="401"\} (\d+)$/m)).toBe(3);
    expect(text).toMatch(/collector_produce_latency_seconds_count\{outcome="ok"\} [1-9]/);
    expect(text).toMatch(/collector_in_flight_events 0/);
  });
});

async function freePortBelowEphemeral(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const probe = net.createServer();
    const ok = await new Promise<boolean>((r) => {
      probe.once('error', () => r(false));
      probe.listen(port, '127.0.0.1', () => r(true));
    });
    if (ok) {
      await new Promise<void>((r) => probe.close(() => r()));
      return port;
    }
  }
}

/** The environment that reproduces an isolated config (topics, keys), for a second collector. */
function envOf(c: Config): Record<string, string> {
  return {
    TOPIC_RAW: c.kafka.rawTopic,
    TOPIC_DLQ: c.kafka.dlqTopic,
    COLLECTOR_HOST: '127.0.0.1',
    COLLECTOR_PORT: '0',
    COLLECTOR_API_KEYS: KEY,
  };
}
