/**
 * The broker's own limit on this machine, for comparison with bench/ingest.ts:
 * Kafka's producer perf test (org.apache.kafka.tools.ProducerPerformance, the
 * class behind kafka-producer-perf-test.sh) and, optionally, the consumer perf
 * test, against a fresh topic shaped like events.raw (6 partitions).
 *
 *   npx tsx bench/kafka-perf.ts --help
 *   npx tsx bench/kafka-perf.ts                                   # 2M records of 500 B, acks=all, idempotent
 *   npx tsx bench/kafka-perf.ts --records 1000000 --record-size 500 --consumer
 *
 * Needs the jars of `infra:up` in .stack/kafka/libs. Loopback only; the topic is deleted afterwards.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Command, InvalidArgumentError } from 'commander';
import { kafkaClient } from '../common/clients';
import { loadConfig } from '../common/config';
import { ensureTopics } from '../common/topics';

function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be an integer >= 1`);
    return n;
  };
}

interface Flags {
  records: number;
  recordSize: number;
  partitions: number;
  throughput: number;
  props: string[];
  consumer: boolean;
  java: string;
}

const program = new Command('bench-kafka-perf')
  .description("The broker's own produce (and consume) limit on this machine, with Kafka's perf-test classes.")
  .option('--records <n>', 'records to produce', int('--records'), 2_000_000)
  .option('--record-size <bytes>', 'bytes per record (the collector writes ~500 B records)', int('--record-size'), 500)
  .option('--partitions <n>', 'partitions of the perf topic', int('--partitions'), 6)
  .option('--throughput <n>', 'records/s cap (-1 = none)', (v) => Number(v), -1)
  .option('--props <k=v...>', 'extra producer properties', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--consumer', 'also run ConsumerPerformance over what was produced', false)
  .option('--java <bin>', 'java executable', 'java')
  .showHelpAfterError()
  .parse();

const f = program.opts<Flags>();
const cfg = loadConfig({ ...process.env, TOPIC_RAW: `bench.kperf.${randomBytes(3).toString('hex')}`, TOPIC_DLQ: 'bench.kperf.dlq', TOPIC_RAW_PARTITIONS: String(f.partitions) });
const libs = path.join(cfg.stack.home, 'kafka', 'libs');
if (!fs.existsSync(libs)) {
  process.stderr.write(`no Kafka jars in ${libs}: run npm run infra:up first\n`);
  process.exit(1);
}
const kafka = kafkaClient(cfg, 'bench-kafka-perf');
await ensureTopics(kafka, cfg);
const broker = cfg.kafka.brokers.join(',');

function run(cls: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(f.java, ['-Xmx512m', '-cp', `${libs}/*`, `-Dlog4j2.configurationFile=${path.join(cfg.stack.home, 'kafka', 'config', 'log4j2.properties')}`, cls, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d;
      process.stdout.write(d);
    });
    p.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cls} exited with ${code}`))));
  });
}

try {
  process.stdout.write(`# ProducerPerformance: ${f.records} records × ${f.recordSize} B, ${f.partitions} partitions, acks=all, idempotent, topic ${cfg.kafka.rawTopic}\n`);
  const produced = await run('org.apache.kafka.tools.ProducerPerformance', [
    '--topic', cfg.kafka.rawTopic,
    '--num-records', String(f.records),
    '--record-size', String(f.recordSize),
    '--throughput', String(f.throughput),
    '--producer-props', `bootstrap.servers=${broker}`, 'acks=all', 'enable.idempotence=true', ...f.props,
  ]);
  const last = produced.trim().split('\n').pop() ?? '';
  const m = /([\d.]+) records\/sec \(([\d.]+) MB\/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th/.exec(last);
  if (m) process.stdout.write(`\nbroker produce limit: ${Math.round(Number(m[1])).toLocaleString('en-US')} records/s (${m[2]} MB/s), latency p50 ${m[5]} ms, p95 ${m[6]} ms, p99 ${m[7]} ms\n`);
  if (f.consumer) {
    process.stdout.write(`\n# ConsumerPerformance over the same ${f.records} records\n`);
    const consumed = await run('org.apache.kafka.tools.ConsumerPerformance', ['--bootstrap-server', broker, '--topic', cfg.kafka.rawTopic, '--messages', String(f.records), '--group', `${cfg.kafka.rawTopic}.perf`, '--timeout', '60000']);
    // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, …
    const row = consumed.trim().split('\n').pop()!.split(',').map((x) => x.trim());
    if (row.length >= 6) process.stdout.write(`\nbroker consume limit: ${Math.round(Number(row[5])).toLocaleString('en-US')} records/s (${Number(row[3]).toFixed(1)} MB/s)\n`);
  }
} finally {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [cfg.kafka.rawTopic, cfg.kafka.dlqTopic] }).catch(() => {});
  await admin.disconnect();
}
