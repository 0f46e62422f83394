/**
 * The four services of the native stack: how each is installed (once, from this
 * machine's package registries, into STACK_HOME), started, and health-checked.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { REPO_ROOT, type Config } from '../common/config';
import { kafkaClient, redisClient, s3Client } from '../common/clients';
import { ensureBucket, ensureTopics } from '../common/topics';
import { portInUse, run, spawnDetached, StackError, waitFor, which, writeFileAtomic } from './proc';

/** Pinned versions. MinIO publishes no semver tags; this pseudo-version is its last source release on the Go proxy. */
export const VERSIONS = {
  kafka: '4.1.2', // infra/kafka/pom.xml
  minio: 'github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c',
  temporal: 'github.com/temporalio/cli/cmd/temporal@v1.5.1',
} as const;

export interface Service {
  name: string;
  /** Ports the service listens on (checked free before start). */
  ports: number[];
  /** Executables this service needs on PATH, with the hint shown when one is missing. */
  requires: { cmd: string; hint: string }[];
  installed(): boolean;
  install(): Promise<void>;
  /** Spawn the process; returns its pid. */
  start(): Promise<number>;
  /** Resolves true when the service answers like it should. */
  healthy(): Promise<boolean>;
  /** Work after the first healthy answer (topics, bucket). Idempotent. */
  provision?(): Promise<void>;
  /** A substring of the process command line, to recognise our own pid. */
  cmdlineMarker: string;
  /** What a human opens, if anything. */
  urls(): Record<string, string>;
}

export function stackPaths(cfg: Config) {
  const home = cfg.stack.home;
  return {
    home,
    bin: path.join(home, 'bin'),
    build: path.join(home, 'build'),
    data: path.join(home, 'data'),
    logs: path.join(home, 'logs'),
    run: path.join(home, 'run'),
    kafka: path.join(home, 'kafka'),
    log: (name: string) => path.join(home, 'logs', `${name}.log`),
    pid: (name: string) => path.join(home, 'run', `${name}.pid`),
  };
}

function httpOk(url: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 500) < 400);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
  });
}

/**
 * `go install` into a private GOBIN, then move the binary into place: an
 * interrupted build never leaves a half-written binary where the stack looks.
 */
async function goInstall(cfg: Config, name: string, module: string): Promise<void> {
  const p = stackPaths(cfg);
  const gobin = path.join(p.build, name);
  fs.rmSync(gobin, { recursive: true, force: true });
  fs.mkdirSync(gobin, { recursive: true });
  await run('go', ['install', module], {
    logFile: p.log(`install-${name}`),
    env: { GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-buildvcs=false' },
    what: `building ${name} (go install ${module})`,
    timeoutMs: 40 * 60_000,
  });
  fs.mkdirSync(p.bin, { recursive: true });
  fs.renameSync(path.join(gobin, name), path.join(p.bin, name));
  fs.rmSync(gobin, { recursive: true, force: true });
}

/** The HA brokers format their storage with one cluster id, made once per home. */
function haClusterId(cfg: Config): string {
  const file = path.join(stackPaths(cfg).data, 'kafka-cluster-id');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  try {
    fs.writeFileSync(file, randomBytes(16).toString('base64url'), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return fs.readFileSync(file, 'utf8').trim();
}

async function brokerCount(cfg: Config): Promise<number> {
  const admin = kafkaClient(cfg, 'infra-health', { probe: true }).admin();
  try {
    await admin.connect();
    return (await admin.describeCluster()).brokers.length;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** One Kafka download per home, however many brokers ask for it at once (the HA stack starts three). */
const kafkaInstalls = new Map<string, Promise<void>>();

/** A broker+controller of the HA stack: its id (1-3), client and controller ports. */
interface KafkaNode {
  id: number;
  port: number;
  controllerPort: number;
}

function kafka(cfg: Config, node?: KafkaNode): Service {
  const p = stackPaths(cfg);
  const libs = path.join(p.kafka, 'libs');
  const complete = path.join(libs, '.complete');
  const confDir = path.join(p.kafka, 'config');
  const name = node ? `kafka-${node.id}` : 'kafka';
  const props = path.join(confDir, node ? `${name}.properties` : 'server.properties');
  const logDir = path.join(p.data, name);
  const java = (args: string[]) => ['-cp', `${libs}/*`, ...args];
  const nodeId = node?.id ?? 1;
  const port = node?.port ?? cfg.stack.kafkaPort;
  const controllerPort = node?.controllerPort ?? cfg.stack.kafkaControllerPort;
  const voters = node
    ? cfg.stack.ha.kafkaControllerPorts.map((cp, i) => `${i + 1}@127.0.0.1:${cp}`).join(',')
    : `1@127.0.0.1:${controllerPort}`;
  // Internal topics (consumer offsets, transactions) replicated like ours: 3 copies, 2 in sync on the HA stack.
  const rf = node ? 3 : 1;
  const minIsr = node ? 2 : 1;

  function writeConfig(): void {
    writeFileAtomic(
      props,
      [
        'process.roles=broker,controller',
        `node.id=${nodeId}`,
        `controller.quorum.voters=${voters}`,
        `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
        'controller.listener.names=CONTROLLER',
        'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
        'inter.broker.listener.name=PLAINTEXT',
        `log.dirs=${logDir}`,
        'num.partitions=6',
        `offsets.topic.replication.factor=${rf}`,
        `transaction.state.log.replication.factor=${rf}`,
        `transaction.state.log.min.isr=${minIsr}`,
        `share.coordinator.state.topic.replication.factor=${rf}`,
        `share.coordinator.state.topic.min.isr=${minIsr}`,
        `default.replication.factor=${rf}`,
        `min.insync.replicas=${minIsr}`,
        'group.initial.rebalance.delay.ms=0',
        'auto.create.topics.enable=false',
        `log.retention.ms=${cfg.kafka.retentionMs}`,
        'message.max.bytes=4194304',
        '',
      ].join('\n'),
    );
    writeFileAtomic(
      path.join(confDir, 'log4j2.properties'),
      [
        'status = warn',
        'appender.out.type = Console',
        'appender.out.name = STDOUT',
        'appender.out.layout.type = PatternLayout',
        'appender.out.layout.pattern = [%d] %p %m (%c)%n',
        'rootLogger.level = warn',
        'rootLogger.appenderRef.out.ref = STDOUT',
        'logger.server.name = kafka.server.KafkaRaftServer',
        'logger.server.level = info',
        '',
      ].join('\n'),
    );
  }

  return {
    name,
    ports: [port, controllerPort],
    requires: [
      { cmd: 'java', hint: 'install Java 17+ (apt-get install openjdk-17-jre-headless)' },
      { cmd: 'mvn', hint: 'install Maven (apt-get install maven): it fetches the Kafka jars from Maven Central' },
    ],
    cmdlineMarker: node ? props : 'kafka.Kafka',
    installed: () => fs.existsSync(complete),
    install() {
      const pending = kafkaInstalls.get(libs) ?? installKafka();
      kafkaInstalls.set(libs, pending);
      return pending.finally(() => kafkaInstalls.delete(libs));
    },
    async start() {
      writeConfig();
      if (!fs.existsSync(path.join(logDir, 'meta.properties'))) {
        fs.rmSync(logDir, { recursive: true, force: true });
        const clusterId = node ? haClusterId(cfg) : randomBytes(16).toString('base64url');
        await run('java', java(['kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props]), {
          logFile: p.log(name),
          what: `formatting Kafka KRaft storage (${name})`,
          env: { KAFKA_LOG4J_OPTS: '' },
          timeoutMs: 120_000,
        });
      }
      return spawnDetached(
        'java',
        [
          // Three brokers share the machine with everything else on the HA stack.
          node ? '-Xms128m' : '-Xms256m',
          node ? '-Xmx512m' : '-Xmx1g',
          '-XX:+UseG1GC',
          '-Djava.awt.headless=true',
          `-Dlog4j2.configurationFile=${path.join(confDir, 'log4j2.properties')}`,
          ...java(['kafka.Kafka', props]),
        ],
        { logFile: p.log(name) },
      );
    },
    async healthy() {
      if (!(await portInUse(port))) return false;
      // This broker itself, not any of the cluster: it answers and counts itself among the registered brokers.
      const admin = kafkaClient({ ...cfg, kafka: { ...cfg.kafka, brokers: [`127.0.0.1:${port}`] } }, 'infra-health', { probe: true }).admin();
      try {
        await admin.connect();
        const cluster = await admin.describeCluster();
        return node ? cluster.brokers.some((b) => b.nodeId === node.id) : cluster.brokers.length > 0;
      } finally {
        await admin.disconnect().catch(() => {});
      }
    },
    // On the HA stack the first broker provisions, once all three are registered (replication factor 3 needs them).
    provision: node && node.id !== 1 ? undefined : async () => {
      if (node) await waitFor(() => brokerCount(cfg).then((n) => n === 3), { timeoutMs: cfg.stack.startTimeoutSec * 1000, what: 'three registered Kafka brokers' });
      await ensureTopics(kafkaClient(cfg, 'infra-provision', { quiet: true }), cfg);
    },
    urls: (): Record<string, string> => (node && node.id !== 1 ? {} : { 'Kafka bootstrap': cfg.kafka.brokers.join(',') }),
  };

  async function installKafka() {
    // Download into a fresh folder and mark it complete last: a half download is redone.
    const tmp = `${libs}.partial`;
    fs.rmSync(tmp, { recursive: true, force: true });
    await run(
      'mvn',
      ['-q', '-B', '-f', path.join(REPO_ROOT, 'infra/kafka/pom.xml'), 'dependency:copy-dependencies', `-DoutputDirectory=${tmp}`],
      { logFile: p.log('install-kafka'), what: `downloading Apache Kafka ${VERSIONS.kafka} jars with Maven`, timeoutMs: 20 * 60_000 },
    );
    fs.rmSync(libs, { recursive: true, force: true });
    fs.renameSync(tmp, libs);
    fs.writeFileSync(complete, `${VERSIONS.kafka}\n`);
  }
}

async function redisPing(port: number): Promise<boolean> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } finally {
    client.disconnect();
  }
}

const installRedis = (cfg: Config) => async () => {
  if (process.getuid?.() !== 0) {
    throw new StackError('redis-server is not installed; run: sudo apt-get install -y redis-server');
  }
  const logFile = stackPaths(cfg).log('install-redis');
  await run('apt-get', ['update', '-qq'], { logFile, what: 'apt-get update', timeoutMs: 10 * 60_000 });
  await run('apt-get', ['install', '-y', '-qq', 'redis-server'], {
    logFile,
    what: 'apt-get install redis-server',
    env: { DEBIAN_FRONTEND: 'noninteractive' },
    timeoutMs: 10 * 60_000,
  });
};

/**
 * The Redis server; on the HA stack also its replica (`replicaOf`: the primary's port at the first
 * start). Which of the two is primary is the Sentinels' business after a failover: either node
 * restarts as a replica of the primary they name.
 */
function redis(cfg: Config, ha?: { name: string; port: number; replicaOf?: number }): Service {
  const p = stackPaths(cfg);
  const name = ha?.name ?? 'redis';
  const port = ha?.port ?? cfg.stack.redisPort;
  const dir = path.join(p.data, name);
  return {
    name,
    ports: [port],
    requires: [],
    cmdlineMarker: 'redis-server',
    installed: () => which('redis-server') !== null,
    install: installRedis(cfg),
    async start() {
      fs.mkdirSync(dir, { recursive: true });
      // After a failover the Sentinels know the primary: a node restarted as a replica of anything else would be wrong.
      const primary = ha ? ((await currentPrimary(cfg)) ?? ha.replicaOf ?? port) : port;
      return spawnDetached(
        'redis-server',
        [
          '--port', String(port),
          '--bind', '127.0.0.1',
          '--dir', dir,
          '--appendonly', 'yes',
          '--appendfsync', 'everysec',
          '--save', '',
          '--daemonize', 'no',
          '--protected-mode', 'no',
          ...(primary !== port ? ['--replicaof', '127.0.0.1', String(primary)] : []),
        ],
        { logFile: p.log(name) },
      );
    },
    async healthy() {
      return (await portInUse(port)) && (await redisPing(port));
    },
    urls: () => ({ [ha ? `Redis ${name}` : 'Redis']: `redis://127.0.0.1:${port}` }),
  };
}

/** The primary's port as the first Sentinel that answers names it, or null (none up yet: a first start). */
async function currentPrimary(cfg: Config): Promise<number | null> {
  for (const port of cfg.stack.ha.redisSentinelPorts) {
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
    client.on('error', () => {});
    try {
      await client.connect();
      const addr = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', cfg.redis.sentinelName)) as string[] | null;
      if (addr) return Number(addr[1]);
    } catch {
      /* not up: ask the next */
    } finally {
      client.disconnect();
    }
  }
  return null;
}

/**
 * A Sentinel of the HA stack (`redis-server --sentinel`, no other package): three watch the primary,
 * two must agree it is down (2 s without an answer) before one promotes the replica.
 */
function sentinel(cfg: Config, id: number, port: number): Service {
  const p = stackPaths(cfg);
  const name = `sentinel-${id}`;
  const dir = path.join(p.data, name);
  const conf = path.join(dir, 'sentinel.conf');
  return {
    name,
    ports: [port],
    requires: [],
    cmdlineMarker: 'redis-server',
    installed: () => which('redis-server') !== null,
    install: installRedis(cfg),
    async start() {
      fs.mkdirSync(dir, { recursive: true });
      // Sentinel rewrites its file with what it learns (the current primary, the epoch): written once, then kept.
      if (!fs.existsSync(conf)) {
        writeFileAtomic(
          conf,
          [
            `port ${port}`,
            'bind 127.0.0.1',
            'protected-mode no',
            `dir ${dir}`,
            `sentinel monitor ${cfg.redis.sentinelName} 127.0.0.1 ${cfg.stack.redisPort} 2`,
            `sentinel down-after-milliseconds ${cfg.redis.sentinelName} 2000`,
            `sentinel failover-timeout ${cfg.redis.sentinelName} 10000`,
            `sentinel parallel-syncs ${cfg.redis.sentinelName} 1`,
            '',
          ].join('\n'),
        );
      }
      return spawnDetached('redis-server', [conf, '--sentinel'], { logFile: p.log(name) });
    },
    async healthy() {
      if (!(await redisPing(port))) return false;
      const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => {});
      try {
        await client.connect();
        // Knows a primary and at least one other Sentinel: a quorum can form.
        const master = (await client.call('SENTINEL', 'MASTER', cfg.redis.sentinelName)) as string[];
        const field = (k: string) => master[master.indexOf(k) + 1];
        return Number(field('num-other-sentinels')) >= 1 && Number(field('num-slaves')) >= 1;
      } finally {
        client.disconnect();
      }
    },
    urls: (): Record<string, string> => (id === 1 ? { 'Redis Sentinels': cfg.redis.sentinels.join(',') } : {}),
  };
}

function minio(cfg: Config): Service {
  const p = stackPaths(cfg);
  const bin = path.join(p.bin, 'minio');
  return {
    name: 'minio',
    ports: [cfg.stack.minioPort, cfg.stack.minioConsolePort],
    requires: [{ cmd: 'go', hint: 'install Go 1.24+ (apt-get install golang, or the Go toolchain): MinIO is built from its Go module' }],
    cmdlineMarker: bin,
    installed: () => fs.existsSync(bin),
    install: () => goInstall(cfg, 'minio', VERSIONS.minio),
    async start() {
      const dir = path.join(p.data, 'minio');
      fs.mkdirSync(dir, { recursive: true });
      // HA: one process erasure-coded over N drives (EC:2 on 4), any one of which can be lost.
      const drives = cfg.stack.ha.enabled ? Array.from({ length: cfg.stack.ha.minioDrives }, (_, i) => path.join(dir, `drive${i + 1}`)) : [];
      for (const d of drives) fs.mkdirSync(d, { recursive: true });
      return spawnDetached(
        bin,
        ['server', ...(drives.length > 0 ? [path.join(dir, `drive{1...${drives.length}}`)] : [dir]), '--address', `127.0.0.1:${cfg.stack.minioPort}`, '--console-address', `127.0.0.1:${cfg.stack.minioConsolePort}`],
        {
          logFile: p.log('minio'),
          env: {
            MINIO_ROOT_USER: cfg.s3.accessKeyId,
            MINIO_ROOT_PASSWORD: cfg.s3.secretAccessKey,
            MINIO_UPDATE: 'off',
            MINIO_BROWSER_REDIRECT: 'off',
            // MinIO refuses drives on the root disk outside CI/CD mode; here the 4 drives are folders of one disk.
            ...(drives.length > 0 ? { MINIO_CI_CD: '1' } : {}),
          },
        },
      );
    },
    healthy: () => httpOk(`http://127.0.0.1:${cfg.stack.minioPort}/minio/health/live`),
    provision: () => ensureBucket(s3Client(cfg), cfg.s3.bucket),
    urls: () => ({
      'MinIO S3 API': `http://127.0.0.1:${cfg.stack.minioPort}`,
      'MinIO console': `http://localhost:${cfg.stack.minioConsolePort} (user ${cfg.s3.accessKeyId})`,
    }),
  };
}

/** Search attributes the workflows set, so runs can be found by kind and period in the UI. */
export const SEARCH_ATTRIBUTES = ['BatchKind=Keyword', 'BatchPeriod=Keyword'];

function temporal(cfg: Config): Service {
  const p = stackPaths(cfg);
  const bin = path.join(p.bin, 'temporal');
  return {
    name: 'temporal',
    ports: [cfg.stack.temporalPort, cfg.stack.temporalUiPort],
    requires: [{ cmd: 'go', hint: 'install Go 1.24+: the Temporal CLI dev server is built from its Go module' }],
    cmdlineMarker: bin,
    installed: () => fs.existsSync(bin),
    install: () => goInstall(cfg, 'temporal', VERSIONS.temporal),
    async start() {
      fs.mkdirSync(p.data, { recursive: true });
      return spawnDetached(
        bin,
        [
          'server', 'start-dev',
          '--ip', '127.0.0.1',
          '--port', String(cfg.stack.temporalPort),
          '--ui-port', String(cfg.stack.temporalUiPort),
          '--db-filename', path.join(p.data, 'temporal.sqlite'),
          '--log-level', 'warn',
          ...SEARCH_ATTRIBUTES.flatMap((sa) => ['--search-attribute', sa]),
        ],
        { logFile: p.log('temporal') },
      );
    },
    async healthy() {
      if (!(await httpOk(`http://127.0.0.1:${cfg.stack.temporalUiPort}/`))) return false;
      const connection = await Connection.connect({ address: `127.0.0.1:${cfg.stack.temporalPort}`, connectTimeout: 2000 });
      try {
        await connection.workflowService.describeNamespace({ namespace: cfg.temporal.namespace });
        return true;
      } finally {
        await connection.close();
      }
    },
    urls: () => ({
      'Temporal frontend': `127.0.0.1:${cfg.stack.temporalPort}`,
      'Temporal UI': `http://localhost:${cfg.stack.temporalUiPort}`,
    }),
  };
}

export function services(cfg: Config): Service[] {
  const ha = cfg.stack.ha;
  if (!ha.enabled) return [kafka(cfg), redis(cfg), minio(cfg), temporal(cfg)];
  return [
    ...ha.kafkaPorts.map((port, i) => kafka(cfg, { id: i + 1, port, controllerPort: ha.kafkaControllerPorts[i] })),
    redis(cfg, { name: 'redis', port: cfg.stack.redisPort }),
    redis(cfg, { name: 'redis-replica', port: ha.redisReplicaPort, replicaOf: cfg.stack.redisPort }),
    ...ha.redisSentinelPorts.map((port, i) => sentinel(cfg, i + 1, port)),
    minio(cfg),
    temporal(cfg),
  ];
}
