/**
 * The Kafka client lever of issue 12: the same produce and consume work through kafkajs (as
 * common/clients.ts and the collector configure it), @platformatic/kafka and node-rdkafka, on
 * the local broker, with the client's and the broker's CPU per message.
 *
 *   npx tsx bench/kafka-clients.ts --help
 *   flock /tmp/itest.lock npx tsx bench/kafka-clients.ts --messages 300000 --runs 3
 *
 * Same for every client: the same records (the collector's serialised events, key = user_id,
 * as strings, the form the collector holds them in), sends of --batch messages with --in-flight
 * sends outstanding, acks=all, idempotent producer; consumers read Buffers in a fresh group from
 * the earliest offset, touch value and offset, commit nothing. Each measurement runs in its own
 * process (a fresh heap and JIT, and process.cpuUsage covers only that client, librdkafka's
 * threads included) from connect to the last ack or message, a consumer's group join included;
 * messages/s counts from the first send, or from the consumer's assignment. Rounds rotate the
 * clients' order. One topic per produce run (bench.kc-<id>.<client>.<run>, 6 partitions), all
 * deleted at the end.
 */
import './kafkajs-linear-grouping'; // first: kafkajs as the collector ran it before @platformatic/kafka
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Partitioners } from 'kafkajs';
import { kafkaClient } from '../common/clients';
import { loadConfig, type Config } from '../common/config';
import { validateEvent } from '../common/contract';
import { simulate } from '../ingestion/simulator/generate';
import { stackPids } from './support';

const CLIENTS = ['kafkajs', 'platformatic', 'rdkafka'] as const;
type Client = (typeof CLIENTS)[number];
/** node-rdkafka only when installed by hand (it is not a dependency). */
const INSTALLED: Client[] = CLIENTS.filter((c) => c !== 'rdkafka' || installed('node-rdkafka'));
function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}
type Phase = 'produce' | 'consume';

interface Job {
  client: Client;
  phase: Phase;
  topic: string;
  group: string;
  messages: number;
  batch: number;
  inFlight: number;
  poolFile: string;
  brokerPid: number | null;
}

interface Result {
  messages: number;
  seconds: number;
  clientCpuUs: number;
  brokerCpuUs: number | null;
}

const TICKS = 100; // USER_HZ on Linux
const require = createRequire(import.meta.url);
/** What the consumers read, so the reads are not optimised away. */
let touched = 0;

function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be an integer >= 1`);
    return n;
  };
}

/** utime + stime of a process, in µs (null when it is gone or unreadable). */
function procCpuUs(pid: number | null): number | null {
  if (pid === null) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / TICKS) * 1e6;
  } catch {
    return null;
  }
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/**
 * The window a measurement covers: this process' CPU and the broker's from now on; wall time from
 * now, or from `first()` when called (a consumer's partitions assigned, so the group join's wait
 * is not counted against throughput while its CPU is).
 */
function window(brokerPid: number | null) {
  let t0 = performance.now();
  let started = false;
  const c0 = cpuUs();
  const b0 = procCpuUs(brokerPid);
  const done = (messages: number): Result => {
    const b1 = procCpuUs(brokerPid);
    return { messages, seconds: (performance.now() - t0) / 1000, clientCpuUs: cpuUs() - c0, brokerCpuUs: b0 === null || b1 === null ? null : b1 - b0 };
  };
  done.first = () => {
    if (!started) t0 = performance.now();
    started = true;
  };
  return done;
}

/** Run `sends` sends with at most `inFlight` outstanding, as the collector's lanes keep several flushes going. */
async function sendAll(job: Job, send: (from: number, to: number) => Promise<void>): Promise<void> {
  let next = 0;
  const sends = Math.ceil(job.messages / job.batch);
  await Promise.all(
    Array.from({ length: Math.min(job.inFlight, sends) }, async () => {
      while (next < sends) {
        const s = next++;
        await send(s * job.batch, Math.min(job.messages, (s + 1) * job.batch));
      }
    }),
  );
}

// ---------------------------------------------------------------------------
// One measurement, in a child process.

async function runJob(job: Job, cfg: Config): Promise<Result> {
  const pool = fs.readFileSync(job.poolFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { key: string; value: string });
  const rec = (i: number) => pool[i % pool.length];
  const brokers = cfg.kafka.brokers;

  if (job.client === 'kafkajs') {
    const kafka = kafkaClient(cfg, `bench-kc-${job.phase}`);
    if (job.phase === 'produce') {
      // As the collector's lanes: idempotent, one request in flight, the default (murmur2) partitioner.
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
      await producer.connect();
      const done = window(job.brokerPid);
      await sendAll(job, async (from, to) => {
        const messages = [];
        for (let i = from; i < to; i++) messages.push(rec(i));
        await producer.sendBatch({ topicMessages: [{ topic: job.topic, messages }], acks: -1 });
      });
      const r = done(job.messages);
      await producer.disconnect();
      return r;
    }
    // As the speed layer: eachBatch, fetch sizes from its config, no auto-commit.
    const consumer = kafka.consumer({ groupId: job.group, maxBytesPerPartition: cfg.speed.maxBytesPerPartition, maxBytes: Math.max(cfg.speed.maxBytes, cfg.speed.maxBytesPerPartition) });
    const done = window(job.brokerPid);
    consumer.on(consumer.events.GROUP_JOIN, () => done.first());
    await consumer.connect();
    await consumer.subscribe({ topic: job.topic, fromBeginning: true });
    const r = await new Promise<Result>((resolve) => {
      let n = 0;
      void consumer.run({
        autoCommit: false,
        partitionsConsumedConcurrently: cfg.speed.partitionsConsumedConcurrently,
        eachBatch: async ({ batch }) => {
          for (const m of batch.messages) touched += (m.value?.length ?? 0) + m.offset.length;
          n += batch.messages.length;
          if (n >= job.messages) resolve(done(n));
        },
      });
    });
    await consumer.disconnect();
    return r;
  }

  if (job.client === 'platformatic') {
    const { Producer, Consumer, ProduceAcks, stringSerializers, compatibilityPartitioner } = await import('@platformatic/kafka');
    if (job.phase === 'produce') {
      // Its default partitioner takes murmur2 unsigned; the compatibility one masks it as Java and
      // kafkajs do, so a key keeps its partition (and a user's events their order) across clients.
      const producer = new Producer({
        clientId: 'bench-kc-produce',
        bootstrapBrokers: brokers,
        serializers: stringSerializers,
        idempotent: true,
        acks: ProduceAcks.ALL,
        partitioner: compatibilityPartitioner,
        autocreateTopics: false,
      });
      // Connect and learn the topic's leaders outside the window, as kafkajs' connect() does.
      await producer.metadata({ topics: [job.topic] });
      const done = window(job.brokerPid);
      await sendAll(job, async (from, to) => {
        const messages = [];
        for (let i = from; i < to; i++) messages.push({ topic: job.topic, key: rec(i).key, value: rec(i).value });
        await producer.send({ messages });
      });
      const r = done(job.messages);
      await producer.close();
      return r;
    }
    const consumer = new Consumer({
      clientId: 'bench-kc-consume',
      groupId: job.group,
      bootstrapBrokers: brokers,
      maxBytesPerPartition: cfg.speed.maxBytesPerPartition,
      maxBytes: Math.max(cfg.speed.maxBytes, cfg.speed.maxBytesPerPartition),
    });
    const done = window(job.brokerPid);
    consumer.on('consumer:group:join', () => done.first());
    const stream = await consumer.consume({ topics: [job.topic], mode: 'earliest', autocommit: false });
    const r = await new Promise<Result>((resolve, reject) => {
      let n = 0;
      stream.on('error', reject);
      stream.on('data', (m: { value: Buffer | undefined; offset: bigint }) => {
        touched += (m.value?.length ?? 0) + Number(m.offset & 1n);
        if (++n === job.messages) resolve(done(n));
      });
    });
    await stream.close();
    await consumer.close(true);
    return r;
  }

  // node-rdkafka is not a dependency: it lost (docs/benchmarks.md) and compiles librdkafka on every
  // install. `npm install --no-save node-rdkafka` (against Node 22's headers, see the docs) to run it.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const Kafka: any = require('node-rdkafka');
  if (job.phase === 'produce') {
    // librdkafka batches on its own thread; linger.ms is the collector's COLLECTOR_LINGER_MS.
    // murmur2_random is the Java (and kafkajs) partitioner, so keys land on the same partitions.
    const producer = new Kafka.Producer(
      {
        'metadata.broker.list': brokers.join(','),
        'enable.idempotence': true,
        'linger.ms': cfg.collector.lingerMs,
        dr_cb: true,
      },
      { 'request.required.acks': -1, partitioner: 'murmur2_random' },
    );
    await new Promise<void>((resolve, reject) => {
      producer.once('ready', () => resolve());
      producer.connect({ topic: job.topic }, (err: Error | null) => err && reject(err));
    });
    const pending = new Map<number, { left: number; resolve: () => void; reject: (e: unknown) => void }>();
    producer.on('delivery-report', (err: Error | null, report: { opaque: unknown }) => {
      const p = pending.get(report.opaque as number)!;
      if (err) p.reject(err);
      else if (--p.left === 0) p.resolve();
    });
    producer.setPollInterval(1);
    const done = window(job.brokerPid);
    let id = 0;
    await sendAll(job, (from, to) => {
      const batchId = id++;
      const acked = new Promise<void>((resolve, reject) => pending.set(batchId, { left: to - from, resolve, reject }));
      for (let i = from; i < to; i++) producer.produce(job.topic, null, Buffer.from(rec(i).value), rec(i).key, null, batchId);
      return acked.finally(() => pending.delete(batchId));
    });
    const r = done(job.messages);
    producer.setPollInterval(0);
    await new Promise<void>((resolve) => producer.disconnect(() => resolve()));
    return r;
  }
  const consumer = new Kafka.KafkaConsumer(
    {
      'metadata.broker.list': brokers.join(','),
      'group.id': job.group,
      'enable.auto.commit': false,
      rebalance_cb: true,
      'max.partition.fetch.bytes': cfg.speed.maxBytesPerPartition,
      'fetch.max.bytes': Math.max(cfg.speed.maxBytes, cfg.speed.maxBytesPerPartition),
    },
    { 'auto.offset.reset': 'earliest' },
  );
  const done = window(job.brokerPid);
  consumer.on('rebalance', (err: { code: number }) => err.code === Kafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS && done.first());
  await new Promise<void>((resolve, reject) => {
    consumer.once('ready', () => resolve());
    consumer.connect({}, (err: Error | null) => err && reject(err));
  });
  consumer.subscribe([job.topic]);
  let n = 0;
  while (n < job.messages) {
    const batch = await new Promise<Array<{ value: Buffer | null; offset: number }>>((resolve, reject) =>
      consumer.consume(1000, (err: Error | null, ms: Array<{ value: Buffer | null; offset: number }>) => (err ? reject(err) : resolve(ms))),
    );
    for (const m of batch) touched += (m.value?.length ?? 0) + (m.offset & 1);
    n += batch.length;
  }
  const r = done(n);
  await new Promise<void>((resolve) => consumer.disconnect(() => resolve()));
  return r;
}

// ---------------------------------------------------------------------------
// The driver.

interface Flags {
  messages: number;
  batch: number;
  inFlight: number;
  runs: number;
  pool: number;
  clients: Client[];
}

function clientList(v: string): Client[] {
  const list = v.split(',').map((s) => s.trim());
  for (const c of list) if (!(CLIENTS as readonly string[]).includes(c)) throw new InvalidArgumentError(`unknown client "${c}" (known: ${CLIENTS.join(', ')})`);
  return list as Client[];
}

/** The collector's records for simulated events of the last hour: what it would write to events.raw. */
function writePool(file: string, size: number): number {
  const now = Date.now();
  const out: string[] = [];
  let bytes = 0;
  for (const send of simulate({ seed: 12, users: 5000, startMs: now - 3600_000, endMs: now })) {
    if (send.kind !== 'valid') continue;
    const v = validateEvent(JSON.parse(send.line), now);
    if (!v.ok) continue;
    const value = JSON.stringify(v.record);
    out.push(JSON.stringify({ key: v.record.user_id, value }));
    bytes += value.length;
    if (out.length === size) break;
  }
  fs.writeFileSync(file, `${out.join('\n')}\n`);
  return Math.round(bytes / out.length);
}

function runChild(job: Job): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, BENCH_KC_JOB: JSON.stringify(job) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result: Result | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('message', (m) => (result = m as Result));
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (result && code === 0) resolve(result);
      else reject(new Error(`${job.client} ${job.phase} exited with ${code}`));
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const loadAvg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function main(): Promise<void> {
  const program = new Command('bench-kafka-clients')
    .description('Produce and consume the same records through each Kafka client on the local broker; messages/s and CPU µs per message (client and broker), median of --runs.')
    .option('--messages <n>', 'messages per measurement', int('--messages'), 200_000)
    .option('--batch <n>', 'messages per send (the collector\'s flushes hold a few hundred)', int('--batch'), 400)
    .option('--in-flight <n>', 'sends outstanding at once (the collector runs 3 lanes)', int('--in-flight'), 3)
    .option('--runs <n>', 'rounds; each measures every client once, in alternating order', int('--runs'), 3)
    .option('--pool <n>', 'distinct records, repeated over --messages', int('--pool'), 20_000)
    .addOption(new Option('--clients <list>', `comma-separated, of ${CLIENTS.join(', ')}`).argParser(clientList).default(INSTALLED, INSTALLED.join(',')))
    .showHelpAfterError()
    .parse();
  const f = program.opts<Flags>();
  const cfg = loadConfig(process.env);
  const id = randomBytes(3).toString('hex');
  const prefix = `bench.kc-${id}`;
  const poolFile = path.join(os.tmpdir(), `${prefix}.ndjson`);
  const recordBytes = writePool(poolFile, f.pool);
  const brokerPid = stackPids(cfg).kafka;
  if (brokerPid === null) process.stderr.write('broker pid not found: broker CPU is not reported\n');

  const kafka = kafkaClient(cfg, 'bench-kafka-clients');
  const admin = kafka.admin();
  await admin.connect();
  const topics: string[] = [];
  const results = new Map<string, Result[]>();
  const load0 = loadAvg();
  process.stdout.write(`# ${f.messages} messages of ${recordBytes} B (mean), sends of ${f.batch}, ${f.inFlight} in flight, acks=all, idempotent; ${f.runs} rounds; load ${load0}\n`);
  try {
    for (let run = 0; run < f.runs; run++) {
      const order = f.clients.map((_, i) => f.clients[(i + run) % f.clients.length]);
      const produced = new Map<Client, string>();
      for (const phase of ['produce', 'consume'] as const) {
        for (const client of order) {
          const topic = produced.get(client) ?? `${prefix}.${client}.${run}`;
          if (phase === 'produce') {
            await admin.createTopics({ topics: [{ topic, numPartitions: 6, replicationFactor: 1 }], waitForLeaders: true });
            topics.push(topic);
            produced.set(client, topic);
          }
          const job: Job = { client, phase, topic, group: `${topic}.group`, messages: f.messages, batch: f.batch, inFlight: f.inFlight, poolFile, brokerPid };
          const r = await runChild(job);
          const key = `${client} ${phase}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          process.stdout.write(
            `round ${run + 1} ${key.padEnd(20)} ${fmt(r.messages / r.seconds).padStart(9)} msg/s  client ${fmt(r.clientCpuUs / r.messages, 2).padStart(6)} µs/msg  broker ${r.brokerCpuUs === null ? '-' : fmt(r.brokerCpuUs / r.messages, 2)} µs/msg\n`,
          );
        }
      }
    }
  } finally {
    if (topics.length > 0) await admin.deleteTopics({ topics }).catch((err: Error) => process.stderr.write(`could not delete ${topics.join(', ')}: ${err.message}\n`));
    await admin.disconnect();
    fs.rmSync(poolFile, { force: true });
  }

  process.stdout.write(`\nload average before ${load0}, after ${loadAvg()}\n\n`);
  process.stdout.write('| client | phase | msg/s | client µs/msg | broker µs/msg |\n|---|---|---:|---:|---:|\n');
  for (const phase of ['produce', 'consume'] as const) {
    for (const client of f.clients) {
      const rs = results.get(`${client} ${phase}`) ?? [];
      if (rs.length === 0) continue;
      const broker = rs.every((r) => r.brokerCpuUs !== null) ? fmt(median(rs.map((r) => r.brokerCpuUs! / r.messages)), 2) : '-';
      process.stdout.write(`| ${client} | ${phase} | ${fmt(median(rs.map((r) => r.messages / r.seconds)))} | ${fmt(median(rs.map((r) => r.clientCpuUs / r.messages)), 2)} | ${broker} |\n`);
    }
  }
}

if (process.env.BENCH_KC_JOB) {
  const job = JSON.parse(process.env.BENCH_KC_JOB) as Job;
  const r = await runJob(job, loadConfig(process.env));
  process.send!({ ...r, touched });
  process.disconnect();
} else {
  await main();
}
