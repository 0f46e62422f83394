/**
 * The small HTTP side door of a long-running process: GET /metrics (Prometheus)
 * and GET /health (200 when healthy, 503 otherwise, with a JSON body saying why).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './log';

export interface Health {
  ok: boolean;
  /** Shown as `status` in the body; defaults to "ok" / "degraded" from `ok`. */
  status?: string;
  [detail: string]: unknown;
}

export interface StatusServer {
  port: number;
  close(): Promise<void>;
}

export async function startStatusServer(opts: {
  host: string;
  port: number;
  registry: Registry;
  health: () => Promise<Health> | Health;
  log: Logger;
}): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    void (async () => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': opts.registry.contentType });
        res.end(await opts.registry.metrics());
      } else if (req.method === 'GET' && req.url === '/health') {
        const { ok, ...detail } = await opts.health();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: ok ? 'ok' : 'degraded', ...detail }));
      } else {
        res.writeHead(404).end();
      }
    })().catch((err: Error) => {
      opts.log.warn({ err: err.message }, 'status handler failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
