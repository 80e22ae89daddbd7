#!/usr/bin/env node
// serve.mjs: the demo page's static server. Node only (node:http), no dependencies.
//
//   node web/serve.mjs [--port N] [--host 127.0.0.1]      (or PORT=N; default 8321, else a free port)
//
// Serves web/ at /, the repository's demo-models/ at /models/ and tests/fixtures/resnet/ at
// /fixtures/resnet/ (the fallback model), Fashion-MNIST's IDX files at /data/fashion-mnist/ (Debian's
// dataset-fashion-mnist in /usr/share/datasets/fashion-mnist, or $BNL_FASHION_MNIST; served as the
// .gz files they are: web/bnlab.mjs inflates them), plus /models.json: the models the page can load,
// best first; a model trained on a dataset the server has carries `dataset` (the URLs of its test
// files). Every response carries COOP/COEP (cross-origin isolated page, as wasm threads would need).
// Paths with "..", backslashes, NUL or an absolute form are refused: nothing outside those folders.
import http from 'node:http';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(WEB, '..');

// URL prefix -> folder. The longest matching prefix wins.
const FASHION_DIR = path.resolve(process.env.BNL_FASHION_MNIST || '/usr/share/datasets/fashion-mnist');
const MOUNTS = [
  ['/models/', path.join(ROOT, 'demo-models')],
  ['/data/fashion-mnist/', FASHION_DIR],
  ['/fixtures/resnet/', path.join(ROOT, 'tests', 'fixtures', 'resnet')],
  ['/', WEB],
];

// The default model first (the Fashion-MNIST ResNet-18: real images; the procedural ResNet-50 is the page's
// second choice); the narrow fixture (untrained, 10 classes) is always there as the fallback.
const MODEL_CANDIDATES = [
  { url: '/models/resnet18-fashion-mnist.safetensors', file: path.join(ROOT, 'demo-models', 'resnet18-fashion-mnist.safetensors'),
    name: 'ResNet-18 (quarter width), trained on Fashion-MNIST', dataset: 'fashion-mnist' },
  { url: '/models/resnet50-procedural.safetensors', file: path.join(ROOT, 'demo-models', 'resnet50-procedural.safetensors'),
    name: 'ResNet-50 (reduced width), trained on the procedural shapes' },
  { url: '/models/experiments/fashion_batch_size/resnet18-fashion-B2.safetensors',
    file: path.join(ROOT, 'demo-models', 'experiments', 'fashion_batch_size', 'resnet18-fashion-B2.safetensors'),
    name: 'ResNet-18 (1/8 width), Fashion-MNIST subset, trained at batch size 2', dataset: 'fashion-mnist' },
  { url: '/models/experiments/fashion_batch_size/resnet18-fashion-B128.safetensors',
    file: path.join(ROOT, 'demo-models', 'experiments', 'fashion_batch_size', 'resnet18-fashion-B128.safetensors'),
    name: 'ResNet-18 (1/8 width), Fashion-MNIST subset, trained at batch size 128', dataset: 'fashion-mnist' },
  // issue 14: one small model per normalization kind (procedural data; the page's norm panel follows the kind)
  ...[['batch', 'BatchNorm'], ['group', 'GroupNorm'], ['renorm', 'Batch Renorm'], ['ghost', 'Ghost BatchNorm'],
    ['frozen', 'frozen BatchNorm'], ['none', 'no normalization']].map(([k, label]) => ({
    url: `/models/norms/${k}.safetensors`, file: path.join(ROOT, 'demo-models', 'norms', `${k}.safetensors`),
    name: `Norm demo: ${label} (small ResNet, procedural shapes)` })),
  { url: '/fixtures/resnet/resnet50.weights.safetensors', file: path.join(ROOT, 'tests', 'fixtures', 'resnet', 'resnet50.weights.safetensors'),
    name: 'ResNet-50 topology, narrow test fixture (untrained)' },
];

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.safetensors': 'application/octet-stream',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.gz': 'application/gzip',
};

const COMMON_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};

// Maps a request path to a file inside one of the mounts, or null when it must be refused.
export function resolvePath(urlPath) {
  let p;
  try {
    p = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (!p.startsWith('/') || p.includes('\0') || p.includes('\\') || p.startsWith('//')) return null;
  const segments = p.split('/');
  if (segments.some((s) => s === '..' || s === '.')) return null;
  if (p.endsWith('/')) p += 'index.html';
  for (const [prefix, dir] of MOUNTS) {
    if (!p.startsWith(prefix)) continue;
    const rel = p.slice(prefix.length);
    if (path.isAbsolute(rel) || /^[a-zA-Z]:/.test(rel)) return null;
    const full = path.resolve(dir, rel);
    if (full !== dir && !full.startsWith(dir + path.sep)) return null;   // belt and braces
    return full;
  }
  return null;
}

// The test split's URLs when the files are there, else null (the page then falls back to its own images).
async function fashionManifest() {
  const files = { images: 't10k-images-idx3-ubyte.gz', labels: 't10k-labels-idx1-ubyte.gz' };
  for (const f of Object.values(files)) {
    try {
      if (!(await fs.stat(path.join(FASHION_DIR, f))).isFile()) return null;
    } catch {
      return null;
    }
  }
  return { kind: 'fashion-mnist', images: `/data/fashion-mnist/${files.images}`, labels: `/data/fashion-mnist/${files.labels}` };
}

async function modelsManifest() {
  const out = [];
  for (const m of MODEL_CANDIDATES) {
    try {
      const st = await fs.stat(m.file);
      if (!st.isFile()) continue;
      const entry = { url: m.url, name: m.name, bytes: st.size };
      if (m.dataset === 'fashion-mnist') entry.dataset = await fashionManifest();
      out.push(entry);
    } catch { /* not there (yet) */ }
  }
  return out;
}

function send(res, status, body, type = 'text/plain; charset=utf-8', extra = {}) {
  res.writeHead(status, { ...COMMON_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

export function createServer({ log = false } = {}) {
  return http.createServer(async (req, res) => {
    const done = (status) => { if (log) console.log(`${status} ${req.method} ${req.url}`); };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'method not allowed\n', undefined, { Allow: 'GET, HEAD' });
      return done(405);
    }
    let urlPath;
    try {
      urlPath = new URL(req.url, 'http://localhost').pathname;
    } catch {
      send(res, 400, 'bad request\n');
      return done(400);
    }
    // The raw request line too: URL() folds "/a/../b" before we could see it.
    if (/(^|\/|%2f|%5c)(\.|%2e){2}($|\/|%2f|%5c)/i.test(req.url) || req.url.includes('\\')) {
      send(res, 400, 'bad path\n');
      return done(400);
    }
    if (urlPath === '/models.json') {
      const body = JSON.stringify(await modelsManifest());
      send(res, 200, req.method === 'HEAD' ? '' : body, MIME['.json']);
      return done(200);
    }
    const file = resolvePath(urlPath);
    if (!file) {
      send(res, 400, 'bad path\n');
      return done(400);
    }
    let st;
    try {
      st = await fs.stat(file);
      if (!st.isFile()) throw new Error('not a file');
    } catch {
      send(res, 404, 'not found\n');
      return done(404);
    }
    const type = MIME[path.extname(file).toLowerCase()] || 'application/octet-stream';
    try {
      const body = req.method === 'HEAD' ? Buffer.alloc(0) : await fs.readFile(file);
      res.writeHead(200, { ...COMMON_HEADERS, 'Content-Type': type, 'Content-Length': st.size });
      res.end(body);
      done(200);
    } catch (e) {
      send(res, 500, `cannot read file: ${e.code || e.message}\n`);
      done(500);
    }
  });
}

// Listens on host:port; when that port is taken, falls back to a free port (unless strict).
// Resolves with the server and its URL.
export function listen(server, { port, host = '127.0.0.1', strict = false }) {
  return new Promise((resolve, reject) => {
    const tryListen = (p) => {
      const onError = (e) => {
        server.off('listening', onListening);
        if (e.code === 'EADDRINUSE' && p !== 0 && !strict) {
          console.error(`bnlab demo: port ${p} is in use, taking a free one`);
          tryListen(0);
        } else reject(e);
      };
      const onListening = () => {
        server.off('error', onError);
        const addr = server.address();
        resolve({ server, url: `http://${host}:${addr.port}/` });
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(p, host);
    };
    tryListen(port);
  });
}

function parseArgs(argv) {
  const o = { port: undefined, host: '127.0.0.1', log: false, strict: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--help' || a === '-h') {
      console.log('usage: node web/serve.mjs [--port N] [--host 127.0.0.1] [--log]\n' +
        'Serves the bnlab demo page. Port: --port, else $PORT, else 8321; a free one when that is taken.\n' +
        '--port 0 always takes a free port.');
      process.exit(0);
    } else if (a === '--port' || a.startsWith('--port=')) {
      o.port = Number(val());
    } else if (a === '--host' || a.startsWith('--host=')) o.host = val();
    else if (a === '--log') o.log = true;
    else throw new Error(`unknown argument ${a} (see --help)`);
  }
  if (o.port === undefined && process.env.PORT) {
    o.port = Number(process.env.PORT);
  }
  if (o.port === undefined) o.port = 8321;
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`bad port ${o.port}`);
  return o;
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`bnlab demo: error: ${e.message}`);
    process.exit(2);
  }
  try {
    await fs.access(path.join(WEB, 'bnlab.wasm'));
  } catch {
    console.error('bnlab demo: warning: web/bnlab.wasm is missing; run `bash tests/build.sh` first');
  }
  try {
    const { url } = await listen(createServer({ log: opts.log }), opts);
    console.log(`bnlab demo: ${url}`);
  } catch (e) {
    console.error(`bnlab demo: error: cannot listen on ${opts.host}:${opts.port}: ${e.message}`);
    process.exit(1);
  }
}
