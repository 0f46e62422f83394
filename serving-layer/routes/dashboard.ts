/** The dashboard: its static files at /, and Chart.js from node_modules at /vendor/chart.js/. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync } from 'fastify';
import { REPO_ROOT } from '../../common/config';

export const PUBLIC_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'public');

export const dashboardRoutes: FastifyPluginAsync = async (app) => {
  await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/', index: ['index.html'] });
  await app.register(fastifyStatic, { root: path.join(REPO_ROOT, 'node_modules', 'chart.js', 'dist'), prefix: '/vendor/chart.js/', decorateReply: false });
};
