/**
 * The HA stack's settings and topology, without starting it: what `infra:up -- --ha` and the
 * docker-compose `ha` profile declare (the integration test ha.test.ts runs the real thing).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { HA_MARKER, loadConfig, REPO_ROOT } from '../../common/config';
import { services } from '../../infra/services';

describe('HA settings', () => {
  it('the single-node stack stays the default: one broker, replication 1, no Sentinel', () => {
    const cfg = loadConfig({ STACK_HOME: fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-')) });
    expect(cfg.stack.ha.enabled).toBe(false);
    expect(cfg.kafka.brokers).toEqual(['127.0.0.1:9092']);
    expect([cfg.kafka.replicationFactor, cfg.kafka.minInsyncReplicas]).toEqual([1, 1]);
    expect(cfg.redis.sentinels).toEqual([]);
    expect(services(cfg).map((s) => s.name)).toEqual(['kafka', 'redis', 'minio', 'temporal']);
  });

  it('STACK_HA: its own home, three brokers, RF 3 / min ISR 2, three Sentinels, every service on its own ports', () => {
    const cfg = loadConfig({ STACK_HA: 'true' });
    expect(cfg.stack.home).toBe(path.join(REPO_ROOT, '.stack-ha'));
    expect(cfg.kafka.brokers).toEqual(['127.0.0.1:9092', '127.0.0.1:9094', '127.0.0.1:9096']);
    expect([cfg.kafka.replicationFactor, cfg.kafka.minInsyncReplicas]).toEqual([3, 2]);
    expect(cfg.redis.sentinels).toEqual(['127.0.0.1:26380', '127.0.0.1:26381', '127.0.0.1:26382']);
    const all = services(cfg);
    expect(all.map((s) => s.name)).toEqual(['kafka-1', 'kafka-2', 'kafka-3', 'redis', 'redis-replica', 'sentinel-1', 'sentinel-2', 'sentinel-3', 'minio', 'temporal']);
    const ports = all.flatMap((s) => s.ports);
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('a home with the HA marker is the HA stack without the flag (infra:down/status, the services)', () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    fs.writeFileSync(path.join(home, HA_MARKER), '');
    expect(loadConfig({ STACK_HOME: home }).stack.ha.enabled).toBe(true);
    expect(loadConfig({ STACK_HOME: home, STACK_HA: 'false' }).stack.ha.enabled).toBe(false);
    fs.rmSync(home, { recursive: true });
  });

  it('rejects a port list of the wrong length', () => {
    expect(() => loadConfig({ KAFKA_HA_PORTS: '1,2' })).toThrow(/KAFKA_HA_PORTS must list 3 ports/);
  });
});

describe('docker-compose.yml, profile ha', () => {
  // No `docker compose` client on the CI machine: the file is parsed and its topology checked.
  const compose = parse(fs.readFileSync(path.join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { profiles?: string[]; environment?: Record<string, unknown>; command?: string[]; volumes?: string[] }>;
  };
  const ha = Object.entries(compose.services).filter(([, s]) => s.profiles?.includes('ha'));

  it('has three KRaft brokers forming one controller quorum, with RF 3 and min ISR 2', () => {
    const brokers = ha.filter(([name]) => /^kafka\d$/.test(name)).map(([, s]) => s.environment!);
    expect(brokers.map((e) => e.KAFKA_NODE_ID)).toEqual([1, 2, 3]);
    expect(new Set(brokers.map((e) => e.KAFKA_CONTROLLER_QUORUM_VOTERS))).toEqual(new Set(['1@kafka1:9093,2@kafka2:9093,3@kafka3:9093']));
    expect(new Set(brokers.map((e) => e.CLUSTER_ID)).size).toBe(1);
    for (const e of brokers) expect([e.KAFKA_DEFAULT_REPLICATION_FACTOR, e.KAFKA_MIN_INSYNC_REPLICAS]).toEqual([3, 2]);
  });

  it('has a Redis primary, its replica, three Sentinels with quorum 2, and MinIO on 4 volumes', () => {
    const names = ha.map(([n]) => n);
    expect(names).toEqual(expect.arrayContaining(['redis-primary', 'redis-replica', 'sentinel1', 'sentinel2', 'sentinel3', 'minio-ha']));
    expect(compose.services['redis-replica'].command).toEqual(expect.arrayContaining(['--replicaof', 'redis-primary']));
    expect(compose.services.sentinel1.command!.join(' ')).toMatch(/sentinel monitor clickstream redis-primary 6379 2/);
    expect(compose.services['minio-ha'].command).toContain('/data{1...4}');
    expect(compose.services['minio-ha'].volumes).toHaveLength(4);
    expect(compose.services['provision-ha'].environment).toMatchObject({ TOPIC_REPLICATION_FACTOR: 3, REDIS_SENTINELS: 'sentinel1:26379,sentinel2:26379,sentinel3:26379' });
  });

  it('leaves the default (single-node) services out of the profile', () => {
    for (const name of ['kafka', 'redis', 'minio', 'temporal']) expect(compose.services[name].profiles).toBeUndefined();
  });
});
