/**
 * Where the collector's records go: the only module of the collector that knows
 * kafkajs, so the client can be swapped if a benchmark proves it the bottleneck.
 *
 * The sink tracks whether Kafka is reachable. While it is not, writes fail fast
 * (the collector answers 503) and a probe retries in the background; the process
 * never exits or crash-loops because the broker is away.
 */
import { CompressionTypes, Partitioners, type Admin, type Kafka, type Producer } from 'kafkajs';
import type { Config } from '../../common/config';
import { kafkaClient } from '../../common/clients';
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
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly batcher: Batcher;
  private readonly compression: CompressionTypes;
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
    this.compression = c.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
    this.kafka = kafkaClient(cfg, `${cfg.kafka.clientId}-collector`);
    this.producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
      // Bounded, so a request cannot hang for minutes; the batch deadline answers 503 first anyway.
      retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
    });
    this.batcher = new Batcher((raw, dlq) => this.send(raw, dlq), {
      lingerMs: c.lingerMs,
      maxBytes: c.flushMaxBytes,
      maxMessages: c.flushMaxMessages,
      timeoutMs: c.produceTimeoutMs,
    });
    this.batcher.onFlush = (info) => {
      if (info.error) this.markDown(info.error);
      else this.lastEvidence = Date.now();
      this.onFlush?.(info);
    };
  }

  start(): void {
    void this.probe();
  }

  write(raw: readonly OutMessage[], dlq: readonly OutMessage[]): Promise<void> {
    if (this.state !== 'up') return Promise.reject(new SinkUnavailableError(`Kafka is ${this.state}`));
    return this.batcher.write(raw, dlq);
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
    if (this.state === 'up') await this.batcher.drain();
    this.batcher.failPending(new SinkUnavailableError('collector is shutting down'));
    this.state = 'closed';
    await this.producer.disconnect().catch(() => {});
  }

  private async send(raw: OutMessage[], dlq: OutMessage[]): Promise<void> {
    const topicMessages = [];
    if (raw.length > 0) topicMessages.push({ topic: this.cfg.kafka.rawTopic, messages: raw });
    if (dlq.length > 0) topicMessages.push({ topic: this.cfg.kafka.dlqTopic, messages: dlq });
    await this.producer.sendBatch({ topicMessages, acks: -1, compression: this.compression });
  }

  private markDown(err: Error): void {
    if (this.state !== 'up') return;
    this.state = 'down';
    this.log.error({ err: err.message }, 'Kafka produce failed; answering 503 until it is reachable again');
    // What is still queued would only wait for the deadline: answer it now.
    this.batcher.failPending(new SinkUnavailableError('Kafka is unreachable'));
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

  /** One quick metadata round trip (no retries); then (re)connect the producer. */
  private probe(): Promise<void> {
    this.probing ??= this.runProbe().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async runProbe(): Promise<void> {
    let admin: Admin | undefined;
    try {
      admin = kafkaClient(this.cfg, `${this.cfg.kafka.clientId}-collector-probe`, { probe: true }).admin();
      await admin.connect();
      await admin.fetchTopicMetadata({ topics: [this.cfg.kafka.rawTopic, this.cfg.kafka.dlqTopic] });
      if (!this.connected) {
        await this.producer.connect();
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
      await admin?.disconnect().catch(() => {});
    }
  }
}
