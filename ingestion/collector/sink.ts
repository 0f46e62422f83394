/**
 * Where the collector's records go, through the producer of common/clients.ts.
 *
 * The sink tracks whether Kafka is reachable. While it is not, writes fail fast
 * (the collector answers 503) and a probe retries in the background; the process
 * never exits or crash-loops because the broker is away.
 */
import type { Config } from '../../common/config';
import { eventProducer, keyPartition, type EventProducer, type ProducerRecord } from '../../common/clients';
import type { Logger } from '../../common/log';
import { Batcher, type OutMessage } from './batcher';

export type { OutMessage };
export type SinkState = 'connecting' | 'up' | 'down' | 'closed';

export class SinkUnavailableError extends Error {
  override name = 'SinkUnavailableError';
}

export interface FlushInfo {
  messages: number;
  bytes: number;
  ms: number;
  error?: Error;
}

export interface EventSink {
  readonly state: SinkState;
  /** Begin connecting in the background; never throws. */
  start(): void;
  /**
   * Resolves once Kafka acknowledged every message (acks=all): `raw` to the raw
   * topic keyed by user, `dlq` to the dead-letter topic. Rejects if any was not.
   */
  write(raw: readonly OutMessage[], dlq: readonly OutMessage[]): Promise<void>;
  /** Re-check connectivity if the last evidence is older than `maxAgeMs`. */
  check(maxAgeMs: number): Promise<SinkState>;
  onFlush?: (info: FlushInfo) => void;
  /** Send what is buffered, then disconnect. */
  close(): Promise<void>;
}

export class KafkaSink implements EventSink {
  state: SinkState = 'connecting';
  onFlush: ((info: FlushInfo) => void) | undefined;
  /**
   * One lane per producer. An idempotent producer keeps one request in
   * flight per broker, so one producer caps throughput at (batch ÷ round trip).
   * Lanes send in parallel, each owning a fixed set of partitions (partition %
   * lanes): every partition is still written by one idempotent producer with
   * one request in flight, so per-partition order and idempotence are unchanged.
   */
  private readonly lanes: Array<{ producer: EventProducer; batcher: Batcher }>;
  /** Partitions of the raw topic (from the probe's metadata); 0 until known. */
  private rawPartitions = 0;
  private lastEvidence = 0;
  private probing: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private connected = false;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {
    const c = cfg.collector;
    if (c.compression !== 'none' && c.compression !== 'gzip') {
      throw new Error(`COLLECTOR_COMPRESSION must be none or gzip, got "${c.compression}"`);
    }
    this.lanes = Array.from({ length: c.producers }, (_, i) => {
      const producer = eventProducer(cfg, `${cfg.kafka.clientId}-collector-${i}`, { compression: c.compression as 'none' | 'gzip' });
      const batcher = new Batcher((raw, dlq) => this.send(producer, raw, dlq), {
        lingerMs: c.lingerMs,
        maxBytes: c.flushMaxBytes,
        maxMessages: c.flushMaxMessages,
        timeoutMs: c.produceTimeoutMs,
      });
      batcher.onFlush = (info) => {
        if (info.error) this.markDown(info.error);
        else this.lastEvidence = Date.now();
        this.onFlush?.(info);
      };
      return { producer, batcher };
    });
  }

  start(): void {
    void this.probe();
  }

  write(raw: readonly OutMessage[], dlq: readonly OutMessage[]): Promise<void> {
    if (this.state !== 'up') return Promise.reject(new SinkUnavailableError(`Kafka is ${this.state}`));
    const n = this.lanes.length;
    if (n === 1 || this.rawPartitions === 0) return this.lanes[0].batcher.write(raw, dlq);
    // The partition the producer would pick (murmur2 of the key), fixed here so the lane owning it sends it.
    const byLane: OutMessage[][] = Array.from({ length: n }, () => []);
    const partitions = this.rawPartitions;
    for (const m of raw) {
      const partition = keyPartition(m.key, partitions);
      m.partition = partition;
      byLane[partition % n].push(m);
    }
    const writes: Array<Promise<void>> = [];
    for (let i = 0; i < n; i++) {
      const laneDlq = i === 0 ? dlq : [];
      if (byLane[i].length > 0 || laneDlq.length > 0) writes.push(this.lanes[i].batcher.write(byLane[i], laneDlq));
    }
    return writes.length === 1 ? writes[0] : Promise.all(writes).then(() => undefined);
  }

  async check(maxAgeMs: number): Promise<SinkState> {
    if (this.state === 'closed') return this.state;
    if (this.state === 'up' && Date.now() - this.lastEvidence <= maxAgeMs) return this.state;
    await this.probe();
    return this.state;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    clearTimeout(this.retryTimer);
    if (this.state === 'up') await Promise.all(this.lanes.map((l) => l.batcher.drain()));
    for (const l of this.lanes) l.batcher.failPending(new SinkUnavailableError('collector is shutting down'));
    this.state = 'closed';
    await Promise.all(this.lanes.map((l) => l.producer.close().catch(() => {})));
  }

  private send(producer: EventProducer, raw: OutMessage[], dlq: OutMessage[]): Promise<void> {
    const records: ProducerRecord[] = new Array(raw.length + dlq.length);
    const { rawTopic, dlqTopic } = this.cfg.kafka;
    let i = 0;
    for (const m of raw) records[i++] = { topic: rawTopic, key: m.key, value: m.value, partition: m.partition };
    for (const m of dlq) records[i++] = { topic: dlqTopic, key: m.key, value: m.value, partition: m.partition };
    return producer.send(records);
  }

  private markDown(err: Error): void {
    if (this.state !== 'up') return;
    this.state = 'down';
    this.log.error({ err: err.message }, 'Kafka produce failed; answering 503 until it is reachable again');
    // What is still queued would only wait for the deadline: answer it now.
    for (const l of this.lanes) l.batcher.failPending(new SinkUnavailableError('Kafka is unreachable'));
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.state === 'closed' || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.probe();
    }, this.cfg.collector.retryAfterSec * 1000);
    this.retryTimer.unref();
  }

  /** One quick metadata round trip (no retries); then (re)connect the producers. */
  private probe(): Promise<void> {
    this.probing ??= this.runProbe().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async runProbe(): Promise<void> {
    const probe = eventProducer(this.cfg, `${this.cfg.kafka.clientId}-collector-probe`, { probe: true });
    const topics = [this.cfg.kafka.rawTopic, this.cfg.kafka.dlqTopic];
    try {
      const rawPartitions = (await probe.partitions(topics)).get(this.cfg.kafka.rawTopic) ?? 0;
      if (rawPartitions > 0) this.rawPartitions = rawPartitions;
      if (!this.connected) {
        // Connect and learn the leaders now, so the first request does not pay for it.
        await Promise.all(this.lanes.map((l) => l.producer.partitions(topics)));
        this.connected = true;
      }
      if (this.state === 'closed') return;
      if (this.state !== 'up') this.log.info({ brokers: this.cfg.kafka.brokers }, 'Kafka reachable; accepting events');
      this.state = 'up';
      this.lastEvidence = Date.now();
    } catch (err) {
      if (this.state === 'closed') return;
      if (this.state === 'up') this.markDown(err as Error);
      else {
        if (this.state === 'connecting') this.log.warn({ err: (err as Error).message, brokers: this.cfg.kafka.brokers }, 'Kafka unreachable; retrying');
        this.state = 'down';
        this.scheduleProbe();
      }
    } finally {
      await probe.close().catch(() => {});
    }
  }
}
