import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config';
import { Batcher, ProduceTimeoutError, type OutMessage } from '../../ingestion/collector/batcher';
import { arrayElementSpans, jsonSyntaxError, locate, parseJsonBody, parseNdjsonBody, TooManyEventsError } from '../../ingestion/collector/parse';
import { buildCollector } from '../../ingestion/collector/server';
import { SinkUnavailableError, type EventSink, type FlushInfo, type SinkState } from '../../ingestion/collector/sink';

const msg = (i: number): OutMessage => ({ key: `u${i}`, value: `{"n":${i}}` });

describe('parse', () => {
  it('finds the original text of each array element', () => {
    const text = ' [ {"a": "x,]}\\"y"} ,\n  [1, {"b": []}],"s", 3 ,null ] ';
    const spans = arrayElementSpans(text);
    expect(spans.map(([s, e]) => text.slice(s, e))).toEqual(['{"a": "x,]}\\"y"}', '[1, {"b": []}]', '"s"', '3', 'null']);
    expect(arrayElementSpans('[]')).toEqual([]);
    const body = parseJsonBody(text, 10);
    expect(body.items.map((i) => i.parsed)).toEqual(JSON.parse(text));
    expect(body.rawOf(1)).toBe('[1, {"b": []}]');
  });

  it('locates JSON syntax errors by line and column', () => {
    expect(jsonSyntaxError('{"a":1}')).toBeNull();
    expect(jsonSyntaxError('[1, 2,]')).toEqual({ reason: 'unexpected character "]"', position: 6 });
    expect(jsonSyntaxError('{"a":"\\q"}')).toMatchObject({ reason: 'bad escape in string' });
    expect(jsonSyntaxError('{"a":1} {')).toMatchObject({ reason: 'unexpected data after the JSON value', position: 8 });
    expect(jsonSyntaxError('{"a"')).toMatchObject({ reason: 'unexpected end of input', position: 4 });
    expect(locate('ab\ncd\nef', 7)).toEqual({ line: 3, column: 2 });
    expect(() => parseJsonBody('{\n  "a": nul\n}', 10)).toThrow(/at line 2 column 8 \(position 9\)/);
    expect(() => parseJsonBody('   ', 10)).toThrow(/empty/);
  });

  it('splits NDJSON, skipping blank lines, rejecting bad lines alone', () => {
    const body = parseNdjsonBody('{"a":1}\r\n\n  \n{"b":\n[2]', 10);
    expect(body.items).toHaveLength(3);
    expect(body.items[0].parsed).toEqual({ a: 1 });
    expect(body.items[1].parseError).toMatch(/unexpected end of input at column 6/);
    expect(body.rawOf(1)).toBe('{"b":');
    expect(body.items[2].parsed).toEqual([2]);
  });

  it('counts events against the batch limit', () => {
    expect(() => parseJsonBody(JSON.stringify([1, 2, 3]), 2)).toThrow(TooManyEventsError);
    expect(() => parseNdjsonBody('1\n2\n\n3\n', 2)).toThrow(expect.objectContaining({ count: 3 }));
    expect(parseNdjsonBody('1\n2\n\n', 2).items).toHaveLength(2);
  });
});

describe('Batcher', () => {
  const opts = { lingerMs: 20, maxBytes: 1 << 20, maxMessages: 1000, timeoutMs: 2000 };

  it('coalesces concurrent writes into one flush and settles each caller', async () => {
    const flushes: Array<[number, number]> = [];
    const b = new Batcher(async (raw, dlq) => void flushes.push([raw.length, dlq.length]), opts);
    await Promise.all([b.write([msg(1), msg(2)], []), b.write([msg(3)], [msg(4)]), b.write([], [msg(5)])]);
    expect(flushes).toEqual([[3, 2]]);
  });

  it('seals a batch at maxMessages and keeps one send in flight', async () => {
    let inFlight = 0;
    let maxSeen = 0;
    const sizes: number[] = [];
    const b = new Batcher(
      async (raw) => {
        inFlight++;
        maxSeen = Math.max(maxSeen, inFlight);
        await new Promise((r) => setTimeout(r, 10));
        sizes.push(raw.length);
        inFlight--;
      },
      { ...opts, maxMessages: 4 },
    );
    await b.write(Array.from({ length: 10 }, (_, i) => msg(i)), []);
    expect(sizes).toEqual([4, 4, 2]);
    expect(maxSeen).toBe(1);
  });

  it('rejects every caller of a failed flush, and times out a flush that hangs', async () => {
    const failing = new Batcher(async () => {
      throw new Error('broker gone');
    }, opts);
    const results = await Promise.allSettled([failing.write([msg(1)], []), failing.write([msg(2)], [])]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);

    const hanging = new Batcher(() => new Promise<void>(() => {}), { ...opts, timeoutMs: 100 });
    const infos: FlushInfo[] = [];
    hanging.onFlush = (i) => infos.push(i);
    await expect(hanging.write([msg(1)], [])).rejects.toBeInstanceOf(ProduceTimeoutError);
  });
});

/** A sink that stores in memory and can be switched off, like a Kafka that goes away. */
class FakeSink implements EventSink {
  state: SinkState = 'up';
  raw: OutMessage[] = [];
  dlq: OutMessage[] = [];
  checks = 0;
  onFlush?: (info: FlushInfo) => void;
  start(): void {}
  async write(raw: readonly OutMessage[], dlq: readonly OutMessage[]): Promise<void> {
    if (this.state !== 'up') throw new SinkUnavailableError(`Kafka is ${this.state}`);
    this.raw.push(...raw);
    this.dlq.push(...dlq);
  }
  async check(): Promise<SinkState> {
    this.checks++;
    return this.state;
  }
  async close(): Promise<void> {}
}

describe('collector with a fake sink', () => {
  const cfg = loadConfig({ COLLECTOR_API_KEYS: 'k', COLLECTOR_RETRY_AFTER_SEC: '3' });
  const event = { event_id: 'e1', event_type: 'click', user_id: 'u1', timestamp: Date.UTC(2026, 0, 1) };
  const inject = (c: ReturnType<typeof buildCollector>, body: unknown) =>
    c.app.inject({ method: 'POST', url: '/v1/events', headers: { 'x-api-key': 'k', 'content-type': 'application/json' }, payload: JSON.stringify(body) });

  it('answers 503 while the sink is down and recovers when it is back, acknowledging only what was stored', async () => {
    const sink = new FakeSink();
    const c = buildCollector(cfg, { sink, now: () => Date.UTC(2026, 0, 2) });
    sink.state = 'down';
    const down = await inject(c, [event]);
    expect(down.statusCode).toBe(503);
    expect(down.headers['retry-after']).toBe('3');
    expect(down.json().message).toMatch(/nothing was stored/);
    expect((await c.app.inject({ url: '/health' })).statusCode).toBe(503);
    expect(sink.raw).toHaveLength(0);

    sink.state = 'up';
    const up = await inject(c, [event]);
    expect(up.statusCode).toBe(200);
    expect(up.json()).toMatchObject({ accepted: 1 });
    expect(sink.raw).toHaveLength(1);
    expect(JSON.parse(sink.raw[0].value)).toMatchObject({ event_id: 'e1', received_at: Date.UTC(2026, 0, 2) });
    expect((await c.app.inject({ url: '/health' })).json()).toMatchObject({ status: 'ok', kafka: 'up' });
    await c.app.close();
  });

  it('answers 503 when the write fails mid-request, saying the events may or may not be stored, without Kafka internals', async () => {
    const sink = new FakeSink();
    sink.write = async () => {
      throw new ProduceTimeoutError('not acknowledged by Kafka within 10 ms');
    };
    const c = buildCollector(cfg, { sink });
    const res = await inject(c, [event, { ...event, event_id: 'e2' }]);
    expect(res.statusCode).toBe(503);
    // A timed-out produce may still land: the reply must not claim nothing was stored, and must not leak Kafka's message.
    expect(res.json().message).toMatch(/may or may not be stored; retrying is safe \(events are de-duplicated by event_id\)/);
    expect(res.json().message).not.toMatch(/nothing was stored|10 ms/);
    expect(res.json().request_id).toBe(res.headers['x-request-id']);
    const metrics = await (await c.app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/collector_events_unacknowledged_total\{cause="kafka_unavailable"\} 2/);
    expect(metrics).toMatch(/collector_events_accepted_total 0/);
    await c.app.close();
  });

  it('answers 429 while the in-flight buffer is full', async () => {
    const sink = new FakeSink();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    sink.write = async () => {
      await gate;
    };
    const c = buildCollector(loadConfig({ COLLECTOR_API_KEYS: 'k', COLLECTOR_MAX_IN_FLIGHT_EVENTS: '3' }), { sink });
    const first = inject(c, [event, event]);
    await new Promise((r) => setTimeout(r, 20));
    const second = await inject(c, [event, event]);
    expect(second.statusCode).toBe(429);
    release();
    expect((await first).statusCode).toBe(200);
    expect((await inject(c, [event, event])).statusCode).toBe(200);
    await c.app.close();
  });
});
