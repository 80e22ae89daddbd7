// IDX datasets through web/bnlab.mjs (lab.loadIdxDataset): files built here, plain and gzip'd (the
// bridge inflates with DecompressionStream), batches against values computed here from the bytes,
// sizes from a model's input_size, normalization from a model's mean/std, seeded random batches,
// errors naming the file (truncated, corrupt gzip, wrong magic, counts that disagree) with the
// instance usable afterwards; and the real Fashion-MNIST test files when installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { createBnLab } from '../../web/bnlab.mjs';

const lab = await createBnLab();
const FASHION = process.env.BNL_FASHION_MNIST || '/usr/share/datasets/fashion-mnist';
const FASHION_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

const be32 = (v) => [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
const pixel = (i, y, x) => (i * 37 + y * 11 + x * 5 + 3) & 255;
function idxImages(n, h, w) {
  const b = new Uint8Array(16 + n * h * w);
  b.set([...be32(0x803), ...be32(n), ...be32(h), ...be32(w)]);
  for (let i = 0; i < n; i++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) b[16 + (i * h + y) * w + x] = pixel(i, y, x);
  return b;
}
function idxLabels(n, k) {
  const b = new Uint8Array(8 + n);
  b.set([...be32(0x801), ...be32(n)]);
  for (let i = 0; i < n; i++) b[8 + i] = (i * 7 + 1) % k;
  return b;
}
const gz = (b) => new Uint8Array(gzipSync(b));

const N = 12, S = 10, K = 5;
const IM = idxImages(N, S, S), LB = idxLabels(N, K);

function dataStats(im) {
  let s = 0, q = 0;
  for (let k = 16; k < im.length; k++) { const v = im[k] / 255; s += v; q += v * v; }
  const n = im.length - 16, mean = s / n;
  return { mean, std: Math.sqrt(q / n - mean * mean) };
}

test('plain and gzip\'d files give the same dataset; batches are (v/255 - mean)/std of the bytes', async () => {
  const a = await lab.loadIdxDataset(IM, LB);
  const b = await lab.loadIdxDataset(gz(IM), gz(LB).buffer);   // an ArrayBuffer works too
  try {
    assert.equal(a.count, N);
    assert.equal(a.classes, K);
    assert.equal(a.height, S);
    assert.equal(a.width, S);
    assert.deepEqual(a.classNames, ['0', '1', '2', '3', '4']);
    const { mean, std } = dataStats(IM);
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(a.mean[c] - mean) < 1e-6 && Math.abs(a.std[c] - std) < 1e-6, `mean/std ${a.mean} ${a.std} vs ${mean} ${std}`);
    }
    const idx = [3, 0, 11, 3];
    const ba = a.batchIndices(idx), bb = b.batchIndices(idx);
    assert.deepEqual(Array.from(ba.labels), idx.map((i) => (i * 7 + 1) % K));
    assert.deepEqual(ba.x, bb.x);
    let worst = 0;
    idx.forEach((i, k) => {
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) for (let c = 0; c < 3; c++) {
        const want = (pixel(i, y, x) / 255 - a.mean[c]) / a.std[c];
        worst = Math.max(worst, Math.abs(ba.x[((k * S + y) * S + x) * 3 + c] - want));
      }
    });
    assert.ok(worst < 1e-5, `largest difference ${worst}`);
    // augmentation: deterministic in the seed, not the identity
    const t1 = a.batchIndices(idx, { augment: true, seed: 4 }), t2 = b.batchIndices(idx, { augment: true, seed: 4 });
    assert.deepEqual(t1.x, t2.x);
    assert.notDeepEqual(t1.x, ba.x);
  } finally {
    a.dispose();
    b.dispose();
  }
});

test('size and normalization from a model\'s metadata; padding to S+4, resizing beyond', async () => {
  const model = { info: { inputSize: [3, 14, 14], mean: [0.5, 0.4, 0.3], std: [0.25, 0.5, 2] } };
  const d = await lab.loadIdxDataset(gz(IM), LB, { model });
  try {
    assert.equal(d.height, 14);
    assert.deepEqual(d.mean.map((v) => +v.toFixed(6)), [0.5, 0.4, 0.3]);
    assert.deepEqual(d.std.map((v) => +v.toFixed(6)), [0.25, 0.5, 2]);
    const { x } = d.batchIndices([5]);
    // zero padding of 2: the corner is pixel 0, inside is the file's pixel
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(x[c] - (0 - model.info.mean[c]) / model.info.std[c]) < 1e-6, `corner channel ${c}: ${x[c]}`);
      const at = ((2 * 14 + 2) * 3) + c;
      assert.ok(Math.abs(x[at] - (pixel(5, 0, 0) / 255 - model.info.mean[c]) / model.info.std[c]) < 1e-5, `inside channel ${c}`);
    }
  } finally {
    d.dispose();
  }
  const r = await lab.loadIdxDataset(IM, LB, { model, size: 25 });   // an explicit size wins; 25 > 10 + 4: resized
  try {
    assert.equal(r.height, 25);
    assert.equal(r.batch(0, 2).x.length, 2 * 25 * 25 * 3);
  } finally {
    r.dispose();
  }
});

test('randomBatch: the permutation drawn from the seed, deterministic, and batchIndices of it', async () => {
  const d = await lab.loadIdxDataset(IM, LB);
  try {
    const a = d.randomBatch(6, { seed: 9 }), b = d.randomBatch(6, { seed: 9 }), c = d.randomBatch(6, { seed: 10 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(Array.from(a.indices), Array.from(c.indices));
    assert.equal(new Set(a.indices).size, 6);
    assert.deepEqual(a.x, d.batchIndices(a.indices).x);
    const all = [...d.randomBatch(6, { seed: 9 }).indices, ...d.randomBatch(6, { seed: 9, start: 6 }).indices];
    assert.deepEqual(all.slice().sort((p, q) => p - q), Array.from({ length: N }, (_, i) => i));
    assert.throws(() => d.randomBatch(N + 1), /IDX randomBatch/);
  } finally {
    d.dispose();
  }
});

test('Fashion-MNIST names; bad files reject with the file named and the problem, the instance stays usable', async () => {
  const f = await lab.loadIdxDataset(IM, idxLabels(N, 10), { fashionMnist: true });
  assert.deepEqual(f.classNames, FASHION_NAMES);
  f.dispose();
  const named = { imagesName: 'a-images.gz', labelsName: 'a-labels.gz' };
  const cases = [
    ['truncated IDX', IM.slice(0, IM.length - 3), LB, /a-images\.gz: truncated/],
    ['truncated gzip', gz(IM).slice(0, 40), LB, /a-images\.gz: corrupt or truncated gzip/],
    ['corrupt gzip', (() => { const g = gz(IM); for (let k = 12; k < g.length - 8; k++) g[k] ^= 0x5a; return g; })(), LB,
      /a-images\.gz: corrupt or truncated gzip/],
    ['wrong magic', (() => { const b = IM.slice(); b[3] = 0x77; return b; })(), LB, /a-images\.gz: wrong magic number/],
    ['labels as images', LB, LB, /a-images\.gz: an IDX file of 1 dimensions, expected 3/],
    ['counts disagree', IM, idxLabels(N - 2, K), /a-images\.gz holds 12 images but a-labels\.gz holds 10 labels/],
  ];
  for (const [what, im, lb, re] of cases) {
    await assert.rejects(lab.loadIdxDataset(im, lb, named), (e) => e instanceof Error && re.test(e.message), what);
  }
  await assert.rejects(lab.loadIdxDataset(IM, LB, { fashionMnist: true, classNames: ['x'] }), /classNames/);
  await assert.rejects(lab.loadIdxDataset(IM, idxLabels(N, 12), { fashionMnist: true }), /label 1[01] at image \d+, Fashion-MNIST/);
  await assert.rejects(lab.loadIdxDataset('nope', LB), /Uint8Array/);
  await assert.rejects(lab.loadIdxDataset(IM, LB, { std: [1, 0, 1] }), /std must be > 0/);
  const ok = await lab.loadIdxDataset(IM, LB);
  assert.equal(ok.count, N);
  ok.dispose();
});

test('the real Fashion-MNIST test files (Debian dataset-fashion-mnist)', async (t) => {
  const im = `${FASHION}/t10k-images-idx3-ubyte.gz`, lb = `${FASHION}/t10k-labels-idx1-ubyte.gz`;
  if (!existsSync(im) || !existsSync(lb)) {
    t.skip(`${im} not found (apt-get install dataset-fashion-mnist)`);
    return;
  }
  const d = await lab.loadIdxDataset(readFileSync(im), readFileSync(lb), { fashionMnist: true, size: 32 });
  try {
    assert.equal(d.count, 10000);
    assert.equal(d.height, 32);
    assert.deepEqual(d.classNames, FASHION_NAMES);
    assert.deepEqual(Array.from({ length: 10 }, (_, i) => d.label(i)), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert.ok(Math.abs(d.mean[0] - 0.2868) < 5e-4 && Math.abs(d.std[0] - 0.3524) < 5e-4, `${d.mean} ${d.std}`);
    const img = d.image(0);   // an ankle boot: dark background (the padding and the corners are 0)
    assert.equal(img.length, 32 * 32 * 3);
    assert.equal(img[0], 0);
    assert.ok(img.reduce((m, v) => Math.max(m, v), 0) > 200);
  } finally {
    d.dispose();
  }
});

test('the shipped Fashion-MNIST models classify the real test images in wasm as their .md files say', async (t) => {
  const im = `${FASHION}/t10k-images-idx3-ubyte.gz`, lb = `${FASHION}/t10k-labels-idx1-ubyte.gz`;
  if (!existsSync(im) || !existsSync(lb)) {
    t.skip(`${im} not found (apt-get install dataset-fashion-mnist)`);
    return;
  }
  const root = new URL('../../demo-models/', import.meta.url);
  // [file, least top-1 on the first 1000 test images in eval mode]
  const models = [['resnet18-fashion-mnist.safetensors', 0.9], ['experiments/fashion_batch_size/resnet18-fashion-B128.safetensors', 0.8],
    ['experiments/fashion_batch_size/resnet18-fashion-B2.safetensors', 0]];
  const imBytes = readFileSync(im), lbBytes = readFileSync(lb);
  for (const [file, least] of models) {
    const url = new URL(file, root);
    assert.ok(existsSync(url), `${file} is missing`);
    const m = lab.loadModel(new Uint8Array(readFileSync(url)));
    assert.deepEqual(m.info.labels, FASHION_NAMES, file);
    assert.equal(m.info.inputSize[0], 3, file);
    const d = await lab.loadIdxDataset(imBytes, lbBytes, { model: m, fashionMnist: true });
    assert.equal(d.height, m.info.inputSize[1], file);
    assert.deepEqual(d.mean, m.info.mean.map(Math.fround), file);
    m.eval();
    let right = 0;
    const B = 100, K = 10;
    for (let s = 0; s < 1000; s += B) {
      const { x, labels } = d.batch(s, B);
      const z = m.forward(x, [B, d.height, d.width, 3]);
      for (let i = 0; i < B; i++) {
        let best = 0;
        for (let k = 1; k < K; k++) if (z[i * K + k] > z[i * K + best]) best = k;
        right += best === labels[i] ? 1 : 0;
      }
    }
    assert.ok(right / 1000 >= least, `${file}: top-1 ${right / 1000} on the first 1000 test images, expected >= ${least}`);
    d.dispose();
    m.dispose();
  }
});
