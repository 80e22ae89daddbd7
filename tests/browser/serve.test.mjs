// web/serve.mjs: MIME types, COOP/COEP headers, the model manifest, and no way out of the served
// folders. Plain HTTP (raw sockets for paths fetch() would normalize); no browser needed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createServer, listen, resolvePath } from '../../web/serve.mjs';

let server, base, port;

before(async () => {
  ({ server, url: base } = await listen(createServer(), { port: 0 }));
  port = server.address().port;
});
after(() => server.close());

// GET with the path sent exactly as given (no URL normalization); resolves { status, headers, body }.
function rawGet(p) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    const chunks = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('end', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const [head, ...rest] = text.split('\r\n\r\n');
      const [statusLine, ...lines] = head.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
  });
}

test('serves the page, the bridge and the wasm with the right types and isolation headers', async () => {
  const cases = [
    ['', 'text/html'], ['index.html', 'text/html'], ['app.mjs', 'text/javascript'], ['worker.mjs', 'text/javascript'],
    ['bnlab.mjs', 'text/javascript'], ['style.css', 'text/css'], ['models.json', 'application/json'],
  ];
  for (const [p, type] of cases) {
    const res = await fetch(base + p);
    assert.equal(res.status, 200, p);
    assert.ok(res.headers.get('content-type').startsWith(type), `${p}: ${res.headers.get('content-type')}`);
    assert.equal(res.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(res.headers.get('cross-origin-embedder-policy'), 'require-corp');
    await res.arrayBuffer();
  }
  const wasm = await fetch(base + 'bnlab.wasm');
  if (wasm.status === 200) assert.equal(wasm.headers.get('content-type'), 'application/wasm');
  await wasm.arrayBuffer();
});

test('the model manifest lists loadable files, the fixture always', async () => {
  const list = await (await fetch(base + 'models.json')).json();
  assert.ok(list.length >= 1);
  assert.ok(list.some((m) => m.url === '/fixtures/resnet/resnet50.weights.safetensors'));
  for (const m of list) {
    const res = await fetch(base + m.url.slice(1));
    assert.equal(res.status, 200, m.url);
    assert.equal(res.headers.get('content-type'), 'application/octet-stream');
    assert.equal(Number(res.headers.get('content-length')), m.bytes);
    await res.arrayBuffer();
  }
});

test('nothing outside the served folders: traversal, encoded traversal, absolute paths', async () => {
  for (const p of ['/../README.md', '/%2e%2e/README.md', '/fixtures/resnet/../../../README.md', '/fixtures/resnet/..%2f..%2fREADME.md',
    '/models/%2e%2e/CMakeLists.txt', '/..%5cREADME.md', '/a\\..\\README.md', '/%00index.html']) {
    const res = await rawGet(p);
    assert.ok(res.status === 400 || res.status === 404, `${p} -> ${res.status}`);
    assert.doesNotMatch(res.body, /bnlab|cmake_minimum_required/i, p);
  }
  assert.equal(resolvePath('/../etc/passwd'), null);
  assert.equal(resolvePath('/%2e%2e/etc/passwd'), null);
  assert.equal(resolvePath('/models/../../etc/passwd'), null);
  assert.equal(resolvePath('/x%00'), null);
  assert.equal((await rawGet('/no-such-file.txt')).status, 404);
  assert.equal((await fetch(base + 'index.html', { method: 'POST' })).status, 405);
});
