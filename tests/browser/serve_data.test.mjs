// web/serve.mjs and the Fashion-MNIST files: /data/fashion-mnist/ serves Debian's .gz files as they
// are (application/gzip, same bytes), nothing else from that folder's parents, models.json points
// models trained on Fashion-MNIST at the test split, and the bytes fetched over HTTP load through
// lab.loadIdxDataset as the page would load them. Skipped when the files are not installed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, listen, resolvePath } from '../../web/serve.mjs';
import { createBnLab } from '../../web/bnlab.mjs';

const DIR = process.env.BNL_FASHION_MNIST || '/usr/share/datasets/fashion-mnist';
const HAVE = existsSync(`${DIR}/t10k-images-idx3-ubyte.gz`) && existsSync(`${DIR}/t10k-labels-idx1-ubyte.gz`);
let server, base;

before(async () => { ({ server, url: base } = await listen(createServer(), { port: 0 })); });
after(() => server.close());

test('/data/fashion-mnist/ maps to the dataset folder and nowhere else', () => {
  assert.equal(resolvePath('/data/fashion-mnist/t10k-labels-idx1-ubyte.gz'), `${DIR}/t10k-labels-idx1-ubyte.gz`);
  assert.equal(resolvePath('/data/fashion-mnist/../../etc/passwd'), null);
  assert.equal(resolvePath('/data/fashion-mnist/%2e%2e/x'), null);
});

test('the files over HTTP: same bytes, application/gzip; they load in wasm as the page loads them', async (t) => {
  if (!HAVE) {
    t.skip(`${DIR}: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)`);
    return;
  }
  const get = async (name) => {
    const res = await fetch(`${base}data/fashion-mnist/${name}`);
    assert.equal(res.status, 200, name);
    assert.equal(res.headers.get('content-type'), 'application/gzip');
    const b = new Uint8Array(await res.arrayBuffer());
    assert.deepEqual(b, new Uint8Array(readFileSync(`${DIR}/${name}`)), name);
    return b;
  };
  const lab = await createBnLab();
  const d = await lab.loadIdxDataset(await get('t10k-images-idx3-ubyte.gz'), await get('t10k-labels-idx1-ubyte.gz'),
    { fashionMnist: true });
  assert.equal(d.count, 10000);
  assert.equal(d.classNames[9], 'Ankle boot');
  d.dispose();
  assert.equal((await fetch(`${base}data/fashion-mnist/no-such-file.gz`)).status, 404);
});

test('models.json: models trained on Fashion-MNIST name the test split\'s URLs', async () => {
  const list = await (await fetch(base + 'models.json')).json();
  for (const m of list.filter((e) => 'dataset' in e)) {
    if (!HAVE) {
      assert.equal(m.dataset, null, m.url);
      continue;
    }
    assert.deepEqual(m.dataset, { kind: 'fashion-mnist', images: '/data/fashion-mnist/t10k-images-idx3-ubyte.gz',
      labels: '/data/fashion-mnist/t10k-labels-idx1-ubyte.gz' }, m.url);
    assert.equal((await fetch(base + m.dataset.images.slice(1), { method: 'HEAD' })).status, 200);
  }
});
