/**
 * Helpers of the catch-up tests (issue 17): the backlog (≥ 500,000 events over
 * more than 3 days of event time, as the collector writes them), a fast
 * producer, child processes with their peak RSS, and Prometheus text readers.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { kafkaClient } from '../../common/clients';
import type { Config } from '../../common/config';
import type { EventRecord } from '../../common/contract';
import { simulatedRecords, HOUR_MS } from './speed-support';
import { freePort } from '../../infra/proc';

export { freePort };

const MIN = 60_000;
export const DAY = 24 * HOUR_MS;
/** The speed retention the catch-up tests run with: every day of the backlog counts. */
export const CATCHUP_RETENTION_MS = 4 * DAY;

/**
 * The backlog: simulated traffic of the last 3¼ days (duplicates, late sends), without the events near the
 * per-second retention boundary (by more than a test can last), so expected values do not depend on when an event is applied.
 */
export function catchupBacklog(cfg: Config, now: number): EventRecord[] {
  const boundary = now - cfg.speed.secondRetentionMs;
  return simulatedRecords(cfg, { seed: 17, users: 12_200, windowMs: 3 * DAY + 6 * HOUR_MS, now, duplicateFraction: 0.03 }).filter((r) => Math.abs(r.ts - boundary) > 20 * MIN);
}

/** Fill the topic fast: several idempotent producers, each sending its own slice in large sends. */
export async function produceFast(cfg: Config, records: EventRecord[]): Promise<void> {
  const producers = 3;
  const kafka = kafkaClient(cfg, 'speed-catchup-producer');
  await Promise.all(
    Array.from({ length: producers }, async (_, k) => {
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      try {
        for (let i = k * 5000; i < records.length; i += producers * 5000) {
          const slice = records.slice(i, i + 5000);
          await producer.send({ topic: cfg.kafka.rawTopic, acks: -1, messages: slice.map((r) => ({ key: r.user_id, value: JSON.stringify(r) })) });
        }
      } finally {
        await producer.disconnect();
      }
    }),
  );
}

/** A service started as its own process. */
export interface Child {
  proc: ChildProcess;
  port: number;
  /** Peak RSS (VmHWM) last read from /proc, MiB. */
  peakMiB: number;
  exits: Array<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function samplePeak(child: Child): void {
  try {
    const kb = Number(/^VmHWM:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${child.proc.pid}/status`, 'utf8'))?.[1] ?? 0);
    child.peakMiB = Math.max(child.peakMiB, kb / 1024);
  } catch {
    /* exited */
  }
}

export function exited(child: Child): Promise<NodeJS.Signals | number | null> {
  const { proc } = child;
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.signalCode ?? proc.exitCode);
  return new Promise((r) => proc.once('exit', (code, signal) => r(signal ?? code)));
}

export function metricSum(text: string, name: string): number {
  let s = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) s += Number(line.slice(line.lastIndexOf(' ') + 1));
  return s;
}

/** The smallest histogram bound holding every observation (+Inf when some exceed the largest bound). */
export function largestBucket(text: string, name: string): number {
  const count = metricSum(text, `${name}_count`);
  let best = Infinity;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`).exec(line);
    if (m && Number(m[2]) >= count && m[1] !== '+Inf') best = Math.min(best, Number(m[1]));
  }
  return best;
}
