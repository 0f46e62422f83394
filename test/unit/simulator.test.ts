import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { dayOf, SESSION_GAP_MS, validateEvent, type EventRecord } from '../../common/contract';
import { bingeUsers, INVALID_REASONS, simulate, writeNdjson, type SimulatedSend, type SimulationOptions } from '../../ingestion/simulator/generate';

const DAY = 86_400_000;
const START = Date.UTC(2026, 9, 1);
const NOW = Date.UTC(2026, 10, 21); // collector clock for validation: after every window below
const base: SimulationOptions = { seed: 42, users: 300, startMs: START, endMs: START + 7 * DAY };
const noisy: SimulationOptions = { ...base, lateFraction: 0.05, duplicateFraction: 0.04, invalidFraction: 0.03 };

const all = (opts: SimulationOptions): SimulatedSend[] => [...simulate(opts)];
const noisySends = all(noisy);

function parse(send: SimulatedSend): EventRecord {
  // The simulated history spans weeks before NOW: validate it as a backfill would (no lateness horizon).
  const r = validateEvent(JSON.parse(send.line), NOW, { latenessHorizonMs: Infinity });
  if (!r.ok) throw new Error(`${send.line}: ${r.reason} ${r.detail}`);
  return r.record;
}

describe('simulate: determinism', () => {
  it('gives identical lines for the same seed and options', () => {
    const again = all(noisy);
    expect(again.length).toBe(noisySends.length);
    expect(again.map((s) => s.line)).toEqual(noisySends.map((s) => s.line));
    expect(again.map((s) => s.kind)).toEqual(noisySends.map((s) => s.kind));
  });

  it('gives different lines for a different seed', () => {
    const other = all({ ...noisy, seed: 43 });
    const mine = new Set(noisySends.map((s) => s.line));
    // Only content-free invalid lines such as `null` may coincide.
    const shared = other.filter((s) => mine.has(s.line));
    expect(shared.every((s) => s.kind === 'invalid' && s.eventId === undefined)).toBe(true);
    expect(other.length).toBeGreaterThan(5_000);
  });

  it('keeps the valid events when only the noise fractions change', () => {
    const clean = all(base).filter((s) => s.kind === 'valid').map((s) => s.line).sort();
    const noisyValid = noisySends.filter((s) => s.kind === 'valid' || s.kind === 'late').map((s) => s.line).sort();
    expect(noisyValid).toEqual(clean);
  });

  it('rejects nonsense options', () => {
    expect(() => all({ ...base, users: 0 })).toThrow(/users/);
    expect(() => all({ ...base, endMs: base.startMs })).toThrow(/endMs/);
    expect(() => all({ ...base, lateFraction: 2 })).toThrow(/lateFraction/);
  });
});

describe('simulate: kinds and fractions', () => {
  const count = (k: SimulatedSend['kind']) => noisySends.filter((s) => s.kind === k).length;
  const originals = count('valid') + count('late');

  it('produces a realistic volume with every kind', () => {
    expect(originals).toBeGreaterThan(5_000);
    for (const k of ['valid', 'late', 'duplicate', 'invalid'] as const) expect(count(k)).toBeGreaterThan(0);
  });

  it('roughly honours each fraction of the valid events', () => {
    expect(count('late') / originals).toBeCloseTo(0.05, 1);
    expect(Math.abs(count('late') / originals - 0.05)).toBeLessThan(0.01);
    expect(Math.abs(count('duplicate') / originals - 0.04)).toBeLessThan(0.01);
    expect(Math.abs(count('invalid') / originals - 0.03)).toBeLessThan(0.008);
  });

  it('sends nothing but originals with the fractions at 0', () => {
    const kinds = new Set(all({ ...base, users: 50 }).map((s) => s.kind));
    expect([...kinds]).toEqual(['valid']);
  });

  it('emits in send order, with event times inside the window', () => {
    for (let i = 1; i < noisySends.length; i++) expect(noisySends[i].sendAt).toBeGreaterThanOrEqual(noisySends[i - 1].sendAt);
    for (const s of noisySends) {
      if (s.kind === 'invalid') continue;
      expect(s.ts).toBeGreaterThanOrEqual(noisy.startMs);
      expect(s.ts).toBeLessThan(noisy.endMs);
    }
  });

  it('sends late events hours after their event time, out of order', () => {
    const late = noisySends.filter((s) => s.kind === 'late');
    for (const s of late) {
      expect(s.sendAt - s.ts!).toBeGreaterThanOrEqual(3_600_000);
      expect(s.sendAt - s.ts!).toBeLessThanOrEqual(12 * 3_600_000);
    }
    // Out of order: some event sent before a late one has a later event time.
    let maxTs = 0;
    let outOfOrder = 0;
    for (const s of noisySends) {
      if (s.kind === 'invalid') continue;
      if (s.ts! < maxTs) outOfOrder++;
      maxTs = Math.max(maxTs, s.ts!);
    }
    expect(outOfOrder).toBeGreaterThanOrEqual(late.length * 0.9);
  });

  it('makes duplicates byte-identical resends of an earlier send', () => {
    const firstLine = new Map<string, string>();
    for (const s of noisySends) {
      if (s.kind === 'valid' || s.kind === 'late') firstLine.set(s.eventId!, s.line);
      if (s.kind === 'duplicate') expect(firstLine.get(s.eventId!)).toBe(s.line);
    }
  });
});

describe('simulate: validity against the contract', () => {
  it('every valid, late and duplicate line passes validateEvent; event ids are unique', () => {
    const ids = new Set<string>();
    for (const s of noisySends) {
      if (s.kind === 'invalid') continue;
      const rec = parse(s);
      expect(rec.event_id).toBe(s.eventId);
      expect(rec.ts).toBe(s.ts);
      expect(rec.user_id).toBe(s.userId);
      if (s.kind !== 'duplicate') {
        expect(ids.has(rec.event_id)).toBe(false);
        ids.add(rec.event_id);
      }
    }
  });

  it('every invalid line fails validateEvent with its expected reason, and all reasons occur', () => {
    const seen = new Map<string, number>();
    for (const s of noisySends.filter((x) => x.kind === 'invalid')) {
      let reason: string;
      try {
        const r = validateEvent(JSON.parse(s.line), NOW, { latenessHorizonMs: Infinity });
        expect(r.ok).toBe(false);
        reason = r.ok ? 'accepted' : r.reason;
      } catch {
        reason = 'malformed_json';
      }
      expect(reason).toBe(s.expectedReason);
      seen.set(reason, (seen.get(reason) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual([...INVALID_REASONS].sort());
  });

  it('never puts a newline inside a line', () => {
    for (const s of noisySends) expect(s.line.includes('\n')).toBe(false);
  });
});

describe('simulate: behaviour', () => {
  const records = noisySends.filter((s) => s.kind === 'valid' || s.kind === 'late').map(parse);
  const byUser = new Map<string, EventRecord[]>();
  for (const r of records) (byUser.get(r.user_id) ?? byUser.set(r.user_id, []).get(r.user_id)!).push(r);
  for (const list of byUser.values()) list.sort((a, b) => a.ts - b.ts || a.event_id.localeCompare(b.event_id));

  it('gives every user at least one event', () => {
    expect(byUser.size).toBe(noisy.users);
  });

  it('separates sessions by more than 30 minutes and keeps sessions free of 30-minute holes', () => {
    let sessions = 0;
    for (const list of byUser.values()) {
      for (let i = 1; i < list.length; i++) {
        const gap = list[i].ts - list[i - 1].ts;
        if (list[i].session_id !== list[i - 1].session_id) {
          expect(gap).toBeGreaterThan(SESSION_GAP_MS);
          sessions++;
        } else expect(gap).toBeLessThanOrEqual(SESSION_GAP_MS);
      }
    }
    expect(sessions).toBeGreaterThan(noisy.users);
  });

  it('has sessions that cross midnight, sessions that never play, and bounces', () => {
    const sessions = new Map<string, EventRecord[]>();
    for (const r of records) (sessions.get(r.session_id!) ?? sessions.set(r.session_id!, []).get(r.session_id!)!).push(r);
    const list = [...sessions.values()];
    expect(list.filter((s) => new Set(s.map((e) => dayOf(e.ts))).size > 1).length).toBeGreaterThan(0);
    expect(list.filter((s) => !s.some((e) => e.event_type === 'video_play')).length).toBeGreaterThan(0);
    expect(list.filter((s) => s.length === 1).length).toBeGreaterThan(0);
    const maxNav = Math.max(...list.map((s) => s.filter((e) => ['page_view', 'click', 'search'].includes(e.event_type)).length));
    expect(maxNav).toBeGreaterThanOrEqual(8);
  });

  it('uses every event type', () => {
    const types = new Set(records.map((r) => r.event_type));
    expect(types.size).toBe(12);
  });

  it('has binge watchers, including user 0 on purpose', () => {
    const bingers = bingeUsers(records.filter((r) => r.event_type === 'video_complete').map((r) => ({ userId: r.user_id, ts: r.ts })));
    expect(bingers.has('user_42_0')).toBe(true);
    expect(bingers.size).toBeGreaterThan(5);
  });

  it('models installs for new users, churn and several dimensions', () => {
    const firstDay = new Map<string, string>();
    for (const [u, list] of byUser) firstDay.set(u, dayOf(list[0].ts));
    const installs = records.filter((r) => r.event_type === 'app_install');
    expect(installs.length).toBeGreaterThan(20);
    for (const i of installs) {
      expect(byUser.get(i.user_id)![0].event_id).toBe(i.event_id); // the first thing a new user does
    }
    // New users join on every day, so cohorts past the first are non-empty.
    expect(new Set(firstDay.values()).size).toBe(7);
    // Churn: some users seen early are silent for the last three days.
    const lastDay = dayOf(noisy.endMs - 3 * DAY);
    const silent = [...byUser.values()].filter((l) => l.length > 3 && dayOf(l[l.length - 1].ts) < lastDay).length;
    expect(silent).toBeGreaterThan(5);
    const dims = (k: 'device_type' | 'country' | 'app_version') => new Set(records.map((r) => r[k]));
    expect(dims('device_type').size).toBeGreaterThanOrEqual(5);
    expect(dims('device_type').has('unknown')).toBe(true);
    expect(dims('country').has('unknown')).toBe(true);
    expect(dims('country').has('US') && dims('country').has('BR') && dims('country').has('GB')).toBe(true);
    expect(dims('app_version').has('unknown')).toBe(true);
    const multiDevice = [...byUser.values()].filter((l) => new Set(l.map((e) => e.device_type)).size >= 2).length;
    expect(multiDevice).toBeGreaterThan(10);
  });

  it('fits a short window and keeps every user in it', () => {
    const start = Date.UTC(2026, 9, 1, 12);
    const sends = all({ seed: 7, users: 40, startMs: start, endMs: start + 3_600_000 });
    expect(new Set(sends.map((s) => s.userId)).size).toBe(40);
    for (const s of sends) {
      expect(s.ts).toBeGreaterThanOrEqual(start);
      expect(s.ts).toBeLessThan(start + 3_600_000);
    }
  });
});

describe('simulate: writeNdjson', () => {
  it('writes the same lines as simulate, with counts by kind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-'));
    const file = path.join(dir, 'events.ndjson');
    try {
      const opts = { ...noisy, users: 60 };
      const counts = await writeNdjson(file, opts);
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      expect(lines.pop()).toBe('');
      const expected = all(opts);
      expect(lines).toEqual(expected.map((s) => s.line));
      expect(counts.valid + counts.late + counts.duplicate + counts.invalid).toBe(expected.length);
      expect(counts.invalid).toBe(expected.filter((s) => s.kind === 'invalid').length);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
