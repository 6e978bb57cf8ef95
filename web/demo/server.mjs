#!/usr/bin/env node
// A tiny static server for the demo: web/ at /, and the model files from $TANDEM_MODELS or
// ~/.cache/tandem/models at /models/ (with /models/index.json listing them).
//
//   node demo/server.mjs            # http://localhost:8080/demo/   (PORT=… to change)
//
// Model files are served with `Cache-Control: no-store`: the package keeps them in the Cache
// API itself, and the HTTP cache must not hide a second download from the tests.
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { homedir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.gguf': 'application/octet-stream',
};

export function defaultModelsDir() {
  return process.env.TANDEM_MODELS || join(homedir(), '.cache', 'tandem', 'models');
}

function listModels(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.gguf'))
    .map((name) => ({ name, size: statSync(join(dir, name)).size }));
}

function sendFile(res, req, file, headers = {}) {
  let st;
  try {
    st = statSync(file);
  } catch {
    return notFound(res);
  }
  if (!st.isFile()) return notFound(res);
  res.writeHead(200, {
    'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
    'Content-Length': st.size,
    ...headers,
  });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).pipe(res);
}

function notFound(res) {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
}

/** Resolve `rel` under `root`, or null when it would leave it. */
function inside(root, rel) {
  const p = normalize(join(root, rel));
  return p === root || p.startsWith(root + sep) ? p : null;
}

/**
 * Start the server. Resolves to `{ url, requests, close() }`; `requests` logs every
 * request as `{ method, path }` (the tests count model downloads with it).
 */
export function startServer({ port = 8080, host = '127.0.0.1', root = WEB, modelsDir = defaultModelsDir() } = {}) {
  root = resolve(root);
  const requests = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    requests.push({ method: req.method, path });
    if (path === '/') {
      res.writeHead(302, { Location: existsSync(join(root, 'demo')) ? '/demo/' : '/index.html' });
      return res.end();
    }
    if (path === '/models/index.json') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      return res.end(JSON.stringify(listModels(modelsDir)));
    }
    if (path.startsWith('/models/')) {
      const name = path.slice('/models/'.length);
      if (name.includes('/') || name.includes('\\') || !name.endsWith('.gguf')) return notFound(res);
      return sendFile(res, req, join(modelsDir, name), { 'Cache-Control': 'no-store' });
    }
    let file = inside(root, path);
    if (!file) return notFound(res);
    if (existsSync(file) && statSync(file).isDirectory()) {
      if (!path.endsWith('/')) {
        res.writeHead(301, { Location: `${path}/` });
        return res.end();
      }
      file = join(file, 'index.html');
    }
    sendFile(res, req, file, { 'Cache-Control': 'no-cache' });
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      const { port: actual } = server.address();
      ok({
        url: `http://${host === '0.0.0.0' ? 'localhost' : host}:${actual}`,
        requests,
        close: () => {
          server.closeAllConnections();
          return new Promise((done) => server.close(done));
        },
        server,
      });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const modelsDir = defaultModelsDir();
  const { url } = await startServer({ port: Number(process.env.PORT) || 8080, host: process.env.HOST || '127.0.0.1', modelsDir });
  const models = listModels(modelsDir).map((m) => m.name);
  console.log(`tandem demo: ${url}/demo/`);
  console.log(`models from ${modelsDir}: ${models.length ? models.join(', ') : 'none (scripts/fetch-models.sh all)'}`);
  console.log('WebGPU: Chrome/Edge 113+; on Linux start Chrome with --enable-unsafe-webgpu. Ctrl-C stops.');
}
