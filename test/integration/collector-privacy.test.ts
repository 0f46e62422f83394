/**
 * No full IP address reaches Kafka: events posted with IPv4, IPv6 and mapped
 * addresses (valid ones, rejected ones, a line that is not JSON), and every byte
 * of events.raw and events.dlq read back, for truncation and for the keyed hash.
 */
import { randomBytes } from 'node:crypto';
import type { Consumer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../common/config';
import { kafkaClient } from '../../common/clients';
import type { DeadLetter, EventRecord } from '../../common/contract';
import { buildCollector, type Collector } from '../../ingestion/collector/server';
import { Pseudonymiser } from '../../ingestion/collector/pseudonymise';
import { isolatedConfig } from '../support/isolated';

const KEY = 'it-key';
const run = randomBytes(3).toString('hex');
const SALT = `it-salt-${randomBytes(12).toString('hex')}`;
const IPS = ['198.51.100.23', '2001:db8:85a3:8d3:1319:8a2e:370:7348', '::ffff:203.0.113.77'];
/** What must appear nowhere: each address, and the host parts that make it full. */
const FULL = ['198.51.100.23', '1319:8a2e:370:7348', '8a2e:370:7348', '203.0.113.77'];

let cfg: Config;
const collectors: Collector[] = [];
const seen = { raw: [] as string[], dlq: [] as string[] };
let consumer: Consumer;

async function start(c: Config): Promise<string> {
  const collector = buildCollector(c);
  collectors.push(collector);
  const url = (await collector.start()).replace('[::1]', '127.0.0.1');
  for (let i = 0; i < 200; i++) {
    if ((await fetch(`${url}/health`).catch(() => undefined))?.status === 200) return url;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('collector never became healthy');
}

async function until(what: string, done: () => boolean, timeoutMs = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!done()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const event = (id: string, ip: string, extra: Record<string, unknown> = {}) => ({
  event_id: `${run}-${id}`,
  event_type: 'click',
  user_id: `user-${run}`,
  timestamp: Date.now() - 1000,
  context: { location: 'NL-NH', ip_address: ip },
  ...extra,
});

/** Valid events, an invalid one and a line that is not JSON per address, as NDJSON; the ids it should produce. */
async function send(url: string, tag: string): Promise<{ accepted: string[]; rejected: number }> {
  const lines = IPS.flatMap((ip, i) => [
    JSON.stringify(event(`${tag}-ok-${i}`, ip)),
    JSON.stringify(event(`${tag}-bad-${i}`, ip, { event_type: 'nope' })),
    `{"event_id":"${run}-${tag}-broken-${i}","context":{"ip_address":"${ip}"`,
  ]);
  const res = await fetch(`${url}/v1/events`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson', 'x-api-key': KEY }, body: lines.join('\n') });
  const body = (await res.json()) as { accepted: number; rejected: number };
  expect(body).toMatchObject({ accepted: IPS.length, rejected: 2 * IPS.length });
  return { accepted: IPS.map((_, i) => `${run}-${tag}-ok-${i}`), rejected: 2 * IPS.length };
}

const records = () => seen.raw.map((v) => JSON.parse(v) as EventRecord);
const letters = (tag: string) => seen.dlq.map((v) => JSON.parse(v) as DeadLetter).filter((d) => d.raw.includes(`${run}-${tag}-`));

beforeAll(async () => {
  cfg = await isolatedConfig('privacy', { COLLECTOR_HOST: '127.0.0.1', COLLECTOR_PORT: '0', COLLECTOR_API_KEYS: KEY });
  consumer = kafkaClient(cfg, `privacy-${run}`).consumer({ groupId: `privacy-${run}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      (topic === cfg.kafka.rawTopic ? seen.raw : seen.dlq).push(message.value!.toString());
    },
  });
});

afterAll(async () => {
  await consumer?.disconnect();
  for (const c of collectors) await c.stop();
});

describe('IP pseudonymisation before Kafka', () => {
  it('truncates by default: /24 and /48 in events.raw and in the dead letters, no full address anywhere', async () => {
    const url = await start(cfg);
    const sent = await send(url, 'trunc');
    await until('the truncated records', () => records().filter((r) => sent.accepted.includes(r.event_id)).length === IPS.length);
    await until('the truncated dead letters', () => letters('trunc').length === sent.rejected);
    const ips = records()
      .filter((r) => sent.accepted.includes(r.event_id))
      .sort((a, b) => a.event_id.localeCompare(b.event_id))
      .map((r) => r.context!.ip_address);
    expect(ips).toEqual(['198.51.100.0', '2001:db8:85a3::', '203.0.113.0']);
    for (const d of letters('trunc')) expect(d.raw).toMatch(/"ip_address":"(198\.51\.100\.0|2001:db8:85a3::|203\.0\.113\.0)"/);
  });

  it('hashes with HMAC-SHA256 under the configured salt when asked', async () => {
    const hashed = loadConfig({ ...process.env, IP_PSEUDONYMISATION: 'hash', IP_HASH_SALT: SALT }).privacy;
    const url = await start({ ...cfg, privacy: hashed });
    const sent = await send(url, 'hash');
    await until('the hashed records', () => records().filter((r) => sent.accepted.includes(r.event_id)).length === IPS.length);
    await until('the hashed dead letters', () => letters('hash').length === sent.rejected);
    const mine = records().filter((r) => sent.accepted.includes(r.event_id));
    const expected = new Pseudonymiser(hashed);
    for (const r of mine) {
      const i = Number(r.event_id.slice(-1));
      expect(r.context!.ip_address).toBe(expected.apply(IPS[i], r.received_at));
    }
    for (const d of letters('hash')) expect(d.raw).toMatch(/"ip_address":"hmac:[0-9a-f]{32}"/);
  });

  it('leaves no full address in any byte of either topic', () => {
    expect(seen.raw.length).toBeGreaterThanOrEqual(2 * IPS.length);
    expect(seen.dlq.length).toBeGreaterThanOrEqual(4 * IPS.length);
    for (const value of [...seen.raw, ...seen.dlq]) for (const full of FULL) expect(value).not.toContain(full);
  });
});
