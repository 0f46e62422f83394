/**
 * The four services of the native stack: how each is installed (once, from this
 * machine's package registries, into STACK_HOME), started, and health-checked.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { REPO_ROOT, type Config } from '../common/config';
import { kafkaClient, redisClient, s3Client } from '../common/clients';
import { ensureBucket, ensureTopics } from '../common/topics';
import { portInUse, run, spawnDetached, StackError, which, writeFileAtomic } from './proc';

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

function kafka(cfg: Config): Service {
  const p = stackPaths(cfg);
  const libs = path.join(p.kafka, 'libs');
  const complete = path.join(libs, '.complete');
  const confDir = path.join(p.kafka, 'config');
  const props = path.join(confDir, 'server.properties');
  const logDir = path.join(p.data, 'kafka');
  const java = (args: string[]) => ['-cp', `${libs}/*`, ...args];

  function writeConfig(): void {
    writeFileAtomic(
      props,
      [
        'process.roles=broker,controller',
        'node.id=1',
        `controller.quorum.voters=1@127.0.0.1:${cfg.stack.kafkaControllerPort}`,
        `listeners=PLAINTEXT://127.0.0.1:${cfg.stack.kafkaPort},CONTROLLER://127.0.0.1:${cfg.stack.kafkaControllerPort}`,
        `advertised.listeners=PLAINTEXT://127.0.0.1:${cfg.stack.kafkaPort}`,
        'controller.listener.names=CONTROLLER',
        'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
        'inter.broker.listener.name=PLAINTEXT',
        `log.dirs=${logDir}`,
        'num.partitions=6',
        'offsets.topic.replication.factor=1',
        'transaction.state.log.replication.factor=1',
        'transaction.state.log.min.isr=1',
        'share.coordinator.state.topic.replication.factor=1',
        'share.coordinator.state.topic.min.isr=1',
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
    name: 'kafka',
    ports: [cfg.stack.kafkaPort, cfg.stack.kafkaControllerPort],
    requires: [
      { cmd: 'java', hint: 'install Java 17+ (apt-get install openjdk-17-jre-headless)' },
      { cmd: 'mvn', hint: 'install Maven (apt-get install maven): it fetches the Kafka jars from Maven Central' },
    ],
    cmdlineMarker: 'kafka.Kafka',
    installed: () => fs.existsSync(complete),
    async install() {
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
    },
    async start() {
      writeConfig();
      if (!fs.existsSync(path.join(logDir, 'meta.properties'))) {
        fs.rmSync(logDir, { recursive: true, force: true });
        const clusterId = randomBytes(16).toString('base64url');
        await run('java', java(['kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props]), {
          logFile: p.log('kafka'),
          what: 'formatting Kafka KRaft storage',
          env: { KAFKA_LOG4J_OPTS: '' },
          timeoutMs: 120_000,
        });
      }
      return spawnDetached(
        'java',
        [
          '-Xms256m',
          '-Xmx1g',
          '-XX:+UseG1GC',
          '-Djava.awt.headless=true',
          `-Dlog4j2.configurationFile=${path.join(confDir, 'log4j2.properties')}`,
          ...java(['kafka.Kafka', props]),
        ],
        { logFile: p.log('kafka') },
      );
    },
    async healthy() {
      if (!(await portInUse(cfg.stack.kafkaPort))) return false;
      const admin = kafkaClient(cfg, 'infra-health', { probe: true }).admin();
      try {
        await admin.connect();
        const cluster = await admin.describeCluster();
        return cluster.brokers.length > 0;
      } finally {
        await admin.disconnect().catch(() => {});
      }
    },
    provision: () => ensureTopics(kafkaClient(cfg, 'infra-provision', { quiet: true }), cfg),
    urls: () => ({ 'Kafka bootstrap': cfg.kafka.brokers.join(',') }),
  };
}

function redis(cfg: Config): Service {
  const p = stackPaths(cfg);
  const dir = path.join(p.data, 'redis');
  return {
    name: 'redis',
    ports: [cfg.stack.redisPort],
    requires: [],
    cmdlineMarker: 'redis-server',
    installed: () => which('redis-server') !== null,
    async install() {
      if (process.getuid?.() !== 0) {
        throw new StackError('redis-server is not installed; run: sudo apt-get install -y redis-server');
      }
      const logFile = p.log('install-redis');
      await run('apt-get', ['update', '-qq'], { logFile, what: 'apt-get update', timeoutMs: 10 * 60_000 });
      await run('apt-get', ['install', '-y', '-qq', 'redis-server'], {
        logFile,
        what: 'apt-get install redis-server',
        env: { DEBIAN_FRONTEND: 'noninteractive' },
        timeoutMs: 10 * 60_000,
      });
    },
    async start() {
      fs.mkdirSync(dir, { recursive: true });
      return spawnDetached(
        'redis-server',
        [
          '--port', String(cfg.stack.redisPort),
          '--bind', '127.0.0.1',
          '--dir', dir,
          '--appendonly', 'yes',
          '--appendfsync', 'everysec',
          '--save', '',
          '--daemonize', 'no',
          '--protected-mode', 'no',
        ],
        { logFile: p.log('redis') },
      );
    },
    async healthy() {
      if (!(await portInUse(cfg.stack.redisPort))) return false;
      const client = redisClient({ ...cfg, redis: { ...cfg.redis, url: `redis://127.0.0.1:${cfg.stack.redisPort}` } }, { probe: true });
      try {
        await client.connect();
        return (await client.ping()) === 'PONG';
      } finally {
        client.disconnect();
      }
    },
    urls: () => ({ Redis: `redis://127.0.0.1:${cfg.stack.redisPort}` }),
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
      return spawnDetached(
        bin,
        ['server', dir, '--address', `127.0.0.1:${cfg.stack.minioPort}`, '--console-address', `127.0.0.1:${cfg.stack.minioConsolePort}`],
        {
          logFile: p.log('minio'),
          env: {
            MINIO_ROOT_USER: cfg.s3.accessKeyId,
            MINIO_ROOT_PASSWORD: cfg.s3.secretAccessKey,
            MINIO_UPDATE: 'off',
            MINIO_BROWSER_REDIRECT: 'off',
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
  return [kafka(cfg), redis(cfg), minio(cfg), temporal(cfg)];
}
