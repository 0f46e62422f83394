import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { MAX_LENGTH, validateEvent } from '../../common/contract';
import { KeyRing, keyIdOf } from '../../common/http/auth';
import { checkProductionSettings } from '../../common/http/production';
import { genReqId } from '../../common/http/request-id';
import { parseJsonSeqBody } from '../../ingestion/collector/parse';
import type { IncomingMessage } from 'node:http';

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0);
const base = { event_id: 'evt_1', event_type: 'click', user_id: 'user_1', timestamp: NOW - 1000 };

describe('string limits of the event contract', () => {
  const where: Record<keyof typeof MAX_LENGTH, (v: string) => Record<string, unknown>> = {
    event_id: (v) => ({ event_id: v }),
    user_id: (v) => ({ user_id: v }),
    session_id: (v) => ({ session_id: v }),
    content_id: (v) => ({ properties: { content_id: v } }),
    device_type: (v) => ({ properties: { device_type: v } }),
    video_quality: (v) => ({ properties: { video_quality: v } }),
    page: (v) => ({ properties: { page: v } }),
    target: (v) => ({ properties: { target: v } }),
    location: (v) => ({ context: { location: v } }),
    user_agent: (v) => ({ context: { user_agent: v } }),
    ip_address: (v) => ({ context: { ip_address: v } }),
    app_version: (v) => ({ context: { app_version: v } }),
    // Fields of schema_version 2.
    app_id: (v) => ({ schema_version: 2, app_id: v }),
    device_os: (v) => ({ schema_version: 2, app_id: 'app', properties: { device: { os: v } } }),
    device_model: (v) => ({ schema_version: 2, app_id: 'app', properties: { device: { model: v } } }),
  };
  it.each(Object.keys(MAX_LENGTH) as Array<keyof typeof MAX_LENGTH>)('%s: the limit is accepted, one more is a schema_violation', (field) => {
    const max = MAX_LENGTH[field];
    expect(validateEvent({ ...base, ...where[field]('a'.repeat(max)) }, NOW).ok).toBe(true);
    const r = validateEvent({ ...base, ...where[field]('a'.repeat(max + 1)) }, NOW);
    expect(r).toMatchObject({ ok: false, reason: 'schema_violation' });
    expect(!r.ok && r.detail).toContain(`must NOT have more than ${max} characters`);
  });
});

describe('KeyRing', () => {
  const ring = new KeyRing([
    { keys: ['r1', 'shared'], scopes: ['read'] },
    { keys: ['a1', 'shared'], scopes: ['admin'] },
  ]);
  it('matches only configured keys, whatever their length', () => {
    expect(ring.match('r1')?.keyId).toBe(keyIdOf('r1'));
    expect(ring.match('r')).toBeNull();
    expect(ring.match('r1 ')).toBeNull();
    expect(ring.match('')).toBeNull();
    expect(ring.match('x'.repeat(10_000))).toBeNull();
  });
  it('gives a key listed twice the union of its scopes', () => {
    expect([...(ring.match('shared')?.scopes ?? [])].sort()).toEqual(['admin', 'read']);
    expect([...(ring.match('a1')?.scopes ?? [])]).toEqual(['admin']);
  });
  it('names a key by a digest that does not contain it', () => {
    expect(keyIdOf('dev-read-key')).toMatch(/^key_[0-9a-f]{12}$/);
    expect(keyIdOf('dev-read-key')).not.toContain('dev');
  });
});

describe('production settings', () => {
  const dev = loadConfig({});
  it('refuses the development defaults with NODE_ENV=production, naming each setting', () => {
    expect(() => checkProductionSettings('serving', dev, { NODE_ENV: 'production' })).toThrow(/SERVING_API_KEYS[\s\S]*SERVING_ADMIN_KEYS[\s\S]*SERVING_CORS_ORIGINS[\s\S]*SERVING_HOST[\s\S]*ERASURE_AUDIT_KEY/);
    expect(() => checkProductionSettings('collector', dev, { NODE_ENV: 'production' })).toThrow(/COLLECTOR_API_KEYS[\s\S]*COLLECTOR_HOST/);
  });
  it('allows them outside production, or with the explicit override', () => {
    expect(checkProductionSettings('serving', dev, {})).toEqual({ problems: [], overridden: false });
    const r = checkProductionSettings('serving', dev, { NODE_ENV: 'production', ALLOW_INSECURE_SETTINGS: 'true' });
    expect(r.overridden).toBe(true);
    expect(r.problems.length).toBe(5);
  });
  it('starts with production settings', () => {
    const prod = loadConfig({ SERVING_API_KEYS: 'r-9f2c', SERVING_ADMIN_KEYS: 'a-77d1', SERVING_CORS_ORIGINS: 'https://dash.example', SERVING_HOST: '10.0.0.5', COLLECTOR_API_KEYS: 'i-1', COLLECTOR_HOST: '10.0.0.6', ERASURE_AUDIT_KEY: 'k-5e0a91c2' });
    expect(checkProductionSettings('serving', prod, { NODE_ENV: 'production' }).problems).toEqual([]);
    expect(checkProductionSettings('collector', prod, { NODE_ENV: 'production' }).problems).toEqual([]);
  });
});

describe('request ids', () => {
  const req = (id?: string) => ({ headers: id === undefined ? {} : { 'x-request-id': id } }) as unknown as IncomingMessage;
  it('keeps a plain token from the caller and replaces anything else', () => {
    expect(genReqId(req('lb-1234.abc'))).toBe('lb-1234.abc');
    for (const bad of ['a b', 'x\ny', 'a'.repeat(65), '"}', '']) expect(genReqId(req(bad))).toMatch(/^[0-9a-f-]{36}$/);
    expect(genReqId(req())).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('application/json-seq (RFC 7464)', () => {
  it('splits on the record separator and rejects a bad record alone', () => {
    const body = `\x1e{"a":1}\n\x1e{"a":\n\x1e  {"a":3}\n`;
    const p = parseJsonSeqBody(body, 10);
    expect(p.items.map((i) => i.parsed)).toEqual([{ a: 1 }, undefined, { a: 3 }]);
    expect(p.items[1].parseError).toMatch(/record is not valid JSON/);
    expect(p.rawOf(2)).toBe('{"a":3}');
  });
  it('rejects text before the first separator instead of reading it as a record', () => {
    const p = parseJsonSeqBody(`{"a":0}\n\x1e{"a":1}\n`, 10);
    expect(p.items[0].parseError).toMatch(/record separator/);
    expect(p.items[1].parsed).toEqual({ a: 1 });
  });
  it('counts records against the batch limit', () => {
    expect(() => parseJsonSeqBody('\x1e1\x1e2\x1e3', 2)).toThrow(/batch of 3/);
  });
});
