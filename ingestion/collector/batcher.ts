/**
 * Coalesces the produces of concurrent requests into few large Kafka writes.
 *
 * An idempotent producer serialises requests per broker anyway (one
 * sequence-numbered request in flight), so many small sends only queue behind
 * each other; one send of everything that arrived meanwhile is far cheaper.
 * A request's promise settles when every batch holding its messages did.
 */

export interface OutMessage {
  key: string;
  value: string;
  /** Set by a sink that routes by partition; otherwise the producer's partitioner picks it from the key. */
  partition?: number;
}

export interface BatcherOptions {
  /** How long the first message of a batch may wait for company. */
  lingerMs: number;
  /** A batch is sealed once it holds this many bytes (keys + values)… */
  maxBytes: number;
  /** …or this many messages. */
  maxMessages: number;
  /** A batch not acknowledged within this time (from its creation) fails. */
  timeoutMs: number;
  /** Sends in flight at once. */
  maxInFlight?: number;
}

export type FlushFn = (raw: OutMessage[], dlq: OutMessage[]) => Promise<void>;

export class ProduceTimeoutError extends Error {
  override name = 'ProduceTimeoutError';
}

class Batch {
  raw: OutMessage[] = [];
  dlq: OutMessage[] = [];
  bytes = 0;
  settled = false;
  readonly promise: Promise<void>;
  resolve!: () => void;
  reject!: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number) {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = () => {
        if (this.settled) return;
        this.settled = true;
        clearTimeout(this.timer);
        resolve();
      };
      this.reject = (err) => {
        if (this.settled) return;
        this.settled = true;
        clearTimeout(this.timer);
        reject(err);
      };
    });
    // Callers may not be listening yet when a batch fails; they get the error through `promise`.
    this.promise.catch(() => {});
    this.timer = setTimeout(() => this.reject(new ProduceTimeoutError(`not acknowledged by Kafka within ${timeoutMs} ms`)), timeoutMs);
    this.timer.unref();
  }

  get size(): number {
    return this.raw.length + this.dlq.length;
  }
}

export class Batcher {
  private open: Batch | undefined;
  private readonly ready: Batch[] = [];
  private lingerTimer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private readonly maxInFlight: number;
  /** Called after every flush with its outcome (for metrics and health). */
  onFlush: ((info: { messages: number; bytes: number; ms: number; error?: Error }) => void) | undefined;

  constructor(
    private readonly flushFn: FlushFn,
    private readonly opts: BatcherOptions,
  ) {
    this.maxInFlight = opts.maxInFlight ?? 1;
  }

  /** Resolves once Kafka acknowledged every given message; rejects if any batch holding them failed. */
  write(raw: readonly OutMessage[], dlq: readonly OutMessage[]): Promise<void> {
    let touched: Batch | Batch[] | undefined;
    const add = (m: OutMessage, toDlq: boolean) => {
      let b = this.open;
      if (!b) b = this.open = new Batch(this.opts.timeoutMs);
      (toDlq ? b.dlq : b.raw).push(m);
      b.bytes += m.key.length + m.value.length;
      if (touched === undefined) touched = b;
      else if (touched !== b) {
        if (!Array.isArray(touched)) touched = [touched];
        if (!touched.includes(b)) touched.push(b);
      }
      if (b.bytes >= this.opts.maxBytes || b.size >= this.opts.maxMessages) this.seal();
    };
    for (const m of raw) add(m, false);
    for (const m of dlq) add(m, true);
    if (touched === undefined) return Promise.resolve();
    if (this.open && this.lingerTimer === undefined) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = undefined;
        this.seal();
      }, this.opts.lingerMs);
    }
    return Array.isArray(touched) ? Promise.all(touched.map((b) => b.promise)).then(() => undefined) : touched.promise;
  }

  /** Messages waiting or in flight. */
  get pending(): number {
    return (this.open?.size ?? 0) + this.ready.reduce((n, b) => n + b.size, 0);
  }

  /** Send whatever is open now and wait for everything to settle. */
  async drain(): Promise<void> {
    this.seal();
    const all = [...this.ready];
    await Promise.allSettled(all.map((b) => b.promise));
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  }

  /** Fail everything not yet sent (shutdown, or Kafka known to be down). */
  failPending(err: Error): void {
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    const open = this.open;
    this.open = undefined;
    open?.reject(err);
    for (const b of this.ready.splice(0)) b.reject(err);
  }

  private seal(): void {
    const b = this.open;
    if (!b) return;
    this.open = undefined;
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = undefined;
    }
    this.ready.push(b);
    this.pump();
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.ready.length > 0) {
      const b = this.ready.shift()!;
      if (b.settled) continue; // timed out while queued: do not send what was answered 503
      this.inFlight++;
      const t0 = performance.now();
      this.flushFn(b.raw, b.dlq).then(
        () => {
          b.resolve();
          this.onFlush?.({ messages: b.size, bytes: b.bytes, ms: performance.now() - t0 });
        },
        (err: Error) => {
          b.reject(err);
          this.onFlush?.({ messages: b.size, bytes: b.bytes, ms: performance.now() - t0, error: err });
        },
      ).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }
}
