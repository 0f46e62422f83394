/**
 * Request ids: every reply carries `x-request-id`, every error body its
 * `request_id`, and the server logs the internal cause (an S3, DuckDB or Kafka
 * message) under the same id, so an operator can find what a client saw
 * without the client ever seeing an internal message.
 *
 * A caller's own `x-request-id` is kept when it is a plain token (a load
 * balancer's or a gateway's id), so one id follows the request end to end;
 * anything else is replaced, so no caller can write arbitrary text into the logs.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';

const TOKEN = /^[A-Za-z0-9._:-]{1,64}$/;

export function genReqId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && TOKEN.test(given) ? given : randomUUID();
}

/** Echo the id on every reply. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any server/logger flavour
export function exposeRequestId(app: FastifyInstance<any, any, any, any>): void {
  app.addHook('onSend', async (req, reply, payload) => {
    void reply.header('x-request-id', req.id);
    return payload;
  });
}
