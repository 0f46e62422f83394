import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../common/config';
import { validateEvent, type EventRecord } from '../../common/contract';
import { Pseudonymiser, truncateIp } from '../../ingestion/collector/pseudonymise';

const SALT = 'a-test-salt-of-32-characters-xyz';
const DAY = Date.UTC(2026, 10, 30, 12);
const truncate = new Pseudonymiser(loadConfig({}).privacy);
const hash = new Pseudonymiser(loadConfig({ IP_PSEUDONYMISATION: 'hash', IP_HASH_SALT: SALT }).privacy);
const daily = new Pseudonymiser(loadConfig({ IP_PSEUDONYMISATION: 'hash', IP_HASH_SALT: SALT, IP_HASH_ROTATION: 'daily' }).privacy);

describe('truncation (the default)', () => {
  it('keeps an IPv4 /24 and an IPv6 /48', () => {
    expect(truncateIp('203.0.113.77')).toBe('203.0.113.0');
    expect(truncateIp('10.1.2.3')).toBe('10.1.2.0');
    expect(truncateIp('2001:db8:85a3:8d3:1319:8a2e:370:7348')).toBe('2001:db8:85a3::');
    expect(truncateIp('2001:0DB8:0000:0042::1')).toBe('2001:db8::');
    expect(truncateIp('::1')).toBe('::');
  });

  it('unwraps an IPv4-mapped IPv6 address and drops a zone', () => {
    expect(truncateIp('::ffff:203.0.113.77')).toBe('203.0.113.0');
    expect(truncateIp('::FFFF:cb00:714d')).toBe('203.0.113.0');
    expect(truncateIp('fe80::1:2:3:4%eth0')).toBe('fe80::');
  });

  it('drops what is not one address (it cannot be truncated safely)', () => {
    for (const bad of ['', 'localhost', '203.0.113.77:8080', '203.0.113.77, 10.0.0.1', '0x7f.1', '256.1.1.1', '1.2.3', '2001:db8::g', 'hmac:0123']) {
      expect(truncateIp(bad), bad).toBeNull();
    }
  });

  it('is idempotent (a replayed dead letter keeps its value)', () => {
    for (const ip of ['203.0.113.77', '2001:db8:85a3:8d3::1', '::ffff:1.2.3.4']) expect(truncateIp(truncateIp(ip)!)).toBe(truncateIp(ip));
  });
});

describe('keyed hash', () => {
  it('is HMAC-SHA256 of the canonical address under the salt, the same for every spelling of it', () => {
    const want = `hmac:${createHmac('sha256', SALT).update('203.0.113.77').digest('hex').slice(0, 32)}`;
    expect(hash.apply('203.0.113.77', DAY)).toBe(want);
    expect(hash.apply('::ffff:203.0.113.77', DAY)).toBe(want);
    expect(hash.apply('2001:DB8:0:0::1', DAY)).toBe(hash.apply('2001:db8::1', DAY));
    expect(hash.apply('203.0.113.78', DAY)).not.toBe(want);
    // Never longer than the contract's bound on ip_address, so a replay validates.
    expect(want.length).toBeLessThanOrEqual(64);
  });

  it('hashes a value that is not an address, and keeps a value that is already a hash', () => {
    const h = hash.apply('localhost', DAY)!;
    expect(h).toMatch(/^hmac:[0-9a-f]{32}$/);
    expect(hash.apply(h, DAY)).toBe(h);
  });

  it('rotated daily: stable within a UTC day, different across days', () => {
    const a = daily.apply('203.0.113.77', DAY);
    expect(daily.apply('203.0.113.77', DAY + 3 * 3600_000)).toBe(a);
    expect(daily.apply('203.0.113.77', DAY + 86_400_000)).not.toBe(a);
    expect(a).not.toBe(hash.apply('203.0.113.77', DAY));
  });

  it('refuses to run without a real salt, or with an unknown mode', () => {
    expect(() => loadConfig({ IP_PSEUDONYMISATION: 'hash' })).toThrow(ConfigError);
    expect(() => loadConfig({ IP_PSEUDONYMISATION: 'hash', IP_HASH_SALT: 'short' })).toThrow(ConfigError);
    expect(() => loadConfig({ IP_PSEUDONYMISATION: 'none' })).toThrow(ConfigError);
    expect(() => loadConfig({ IP_HASH_ROTATION: 'weekly' })).toThrow(ConfigError);
  });
});

describe('records and dead letters', () => {
  const event = { event_id: 'e1', event_type: 'click', user_id: 'u1', timestamp: DAY, context: { location: 'US-CA', ip_address: '198.51.100.23' } };
  const record = (validateEvent(event, DAY) as { record: EventRecord }).record;

  it('replaces context.ip_address in a copy of the record', () => {
    const out = truncate.record(record);
    expect(out.context).toEqual({ location: 'US-CA', ip_address: '198.51.100.0' });
    expect(record.context!.ip_address).toBe('198.51.100.23');
    expect(hash.record(record).context!.ip_address).toBe(hash.apply('198.51.100.23', DAY));
  });

  it('drops a value truncation cannot handle, and leaves a record without one alone', () => {
    const odd = (validateEvent({ ...event, context: { ip_address: 'proxy.example' } }, DAY) as { record: EventRecord }).record;
    expect(truncate.record(odd).context).toEqual({});
    const none = (validateEvent({ ...event, context: null }, DAY) as { record: EventRecord }).record;
    expect(truncate.record(none)).toBe(none);
  });

  it('rewrites only the ip_address values of a dead letter, byte for byte elsewhere, JSON or not', () => {
    const text = '{"event_id":"e1", "context": {"ip_address" : "198.51.100.23", "x":1}, "extra":{"ip_address":"2001:db8:1:2::9"}}';
    expect(truncate.raw(text, DAY)).toBe('{"event_id":"e1", "context": {"ip_address" : "198.51.100.0", "x":1}, "extra":{"ip_address":"2001:db8:1::"}}');
    // Not JSON: a value without its closing quote is still replaced.
    expect(truncate.raw('{"context":{"ip_address":"198.51.100.23', DAY)).toBe('{"context":{"ip_address":"198.51.100.0"');
    expect(truncate.raw('{"ip_address":"no-ip"}', DAY)).toBe('{"ip_address":""}');
    expect(hash.raw('{"ip_address":"198.51.100.23"}', DAY)).toBe(`{"ip_address":"${hash.apply('198.51.100.23', DAY)}"}`);
    const plain = '{"event_id":"e2"}';
    expect(truncate.raw(plain, DAY)).toBe(plain);
  });
});
