/**
 * The collector's privacy step: no full `context.ip_address` reaches Kafka, so
 * none reaches the raw lake or the dead letters either (docs/metrics.md, "IP
 * addresses"). Two policies:
 *
 * - `truncate` (default): the network part only, IPv4 /24 (`203.0.113.0`), IPv6
 *   /48 (`2001:db8:85a3::`). Coarse geography and ISP survive; the host does not.
 * - `hash`: `hmac:` + 32 hex digits of HMAC-SHA256(address) keyed by the salt,
 *   or by a key derived from the salt and the UTC day of `received_at` when
 *   rotated daily (the same address then links within a day, never across days).
 *
 * An IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) is its IPv4 address. A value
 * that is not an address (a hostname, a list, `ip:port`) cannot be truncated
 * safely, so truncation drops it; hashing hashes it like an address.
 */
import { createHmac } from 'node:crypto';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';

export type IpPolicy = Config['privacy'];

/** What a hash looks like: a replayed dead letter already carries one and keeps it (hashing is idempotent). */
const HASHED = /^hmac:[0-9a-f]{32}$/;
const DAY_MS = 86_400_000;

/** The address in canonical form (mapped IPv4 unwrapped, zone dropped), or null when the text is not one address. */
export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  const bare = text.trim();
  // node:net is strict (no octal or short IPv4 forms that ipaddr.js would also accept).
  if (isIP(bare.replace(/%.*$/, '')) === 0) return null;
  const addr = ipaddr.parse(bare);
  if (addr.kind() === 'ipv6') {
    const v6 = addr as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return v6.toIPv4Address();
    v6.zoneId = undefined;
  }
  return addr;
}

export function truncateIp(text: string): string | null {
  const addr = parseIp(text);
  if (addr === null) return null;
  const bytes = addr.toByteArray();
  const keep = addr.kind() === 'ipv4' ? 3 : 6;
  for (let i = keep; i < bytes.length; i++) bytes[i] = 0;
  return ipaddr.fromByteArray(bytes).toString();
}

export class Pseudonymiser {
  private readonly dayKeys = new Map<number, Buffer>();

  constructor(private readonly policy: IpPolicy) {}

  /** The value to store instead of `ip` for an event received at `receivedAt`; null = store none. */
  apply(ip: string, receivedAt: number): string | null {
    if (this.policy.ipMode === 'truncate') return truncateIp(ip);
    if (HASHED.test(ip)) return ip;
    const addr = parseIp(ip);
    const canonical = addr === null ? ip : addr.toString();
    return `hmac:${createHmac('sha256', this.key(receivedAt)).update(canonical).digest('hex').slice(0, 32)}`;
  }

  private key(receivedAt: number): Buffer | string {
    if (this.policy.ipHashRotation === 'none') return this.policy.ipHashSalt;
    const day = Math.floor(receivedAt / DAY_MS);
    let key = this.dayKeys.get(day);
    if (key === undefined) {
      key = createHmac('sha256', this.policy.ipHashSalt).update(new Date(day * DAY_MS).toISOString().slice(0, 10)).digest();
      // Only today's and yesterday's keys are ever asked for again.
      if (this.dayKeys.size > 4) this.dayKeys.clear();
      this.dayKeys.set(day, key);
    }
    return key;
  }

  /** The record with its `context.ip_address` pseudonymised (a copy of the context; the input is not changed). */
  record(record: EventRecord): EventRecord {
    const ip = record.context?.ip_address;
    if (typeof ip !== 'string' || ip === '') return record;
    const { ip_address: _, ...rest } = record.context!;
    const value = this.apply(ip, record.received_at);
    return { ...record, context: value === null ? rest : { ...rest, ip_address: value } };
  }

  /**
   * A dead letter's original text with every `"ip_address": "…"` value pseudonymised in place, the
   * rest byte for byte. Works on text that is not JSON too (an unterminated value runs to the line's
   * end); a value that is dropped becomes "" so that a replay still validates.
   */
  raw(text: string, receivedAt: number): string {
    if (!text.includes('"ip_address"')) return text;
    return text.replace(/("ip_address"\s*:\s*)"((?:[^"\\\n]|\\.)*)("?)/g, (_m, head: string, quoted: string) => {
      let value: string;
      try {
        value = JSON.parse(`"${quoted}"`) as string;
      } catch {
        value = quoted;
      }
      return `${head}${JSON.stringify(this.apply(value, receivedAt) ?? '')}`;
    });
  }
}

const cache = new WeakMap<IpPolicy, Pseudonymiser>();
/** One pseudonymiser per configuration (its daily keys are cached). */
export function pseudonymiser(cfg: Config): Pseudonymiser {
  let p = cache.get(cfg.privacy);
  if (p === undefined) cache.set(cfg.privacy, (p = new Pseudonymiser(cfg.privacy)));
  return p;
}
