// GET / and /ui: a page for people (ui/), built on the public API only. Its few files and the vendored chart
// library (uPlot, from node_modules) are read once at start-up and served from memory: no CDN, no build step,
// and no path from the URL ever reaches the file system.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

const UI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'ui');
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'));

const FILES: Record<string, { file: string; type: string }> = {
  '/ui/app.js': { file: join(UI_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/style.css': { file: join(UI_DIR, 'style.css'), type: 'text/css; charset=utf-8' },
  '/ui/vendor/uPlot.iife.min.js': { file: join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/vendor/uPlot.min.css': { file: join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

// Only this server's own files and API; images as blob: URLs (previews, camera snapshots).
const CSP = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

export async function uiRoutes(app: FastifyInstance): Promise<void> {
  const page = readFileSync(join(UI_DIR, 'index.html'));
  const hide = { schema: { hide: true } };
  for (const url of ['/', '/ui', '/ui/']) {
    app.get(url, hide, async (_request, reply) =>
      reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').header('content-security-policy', CSP).send(page));
  }
  for (const [url, { file, type }] of Object.entries(FILES)) {
    const body = readFileSync(file);
    app.get(url, hide, async (_request, reply) => reply.type(type).header('cache-control', 'no-cache').send(body));
  }
}
