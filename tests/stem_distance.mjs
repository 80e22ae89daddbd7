#!/usr/bin/env node
// stem_distance.mjs: does the page's headline hold for a model? At a BatchNorm layer (default the stem,
// bn1), the mean over channels of |batch mean - running mean| / running sigma against the batch size B,
// on Fashion-MNIST test images drawn as the page draws them (the 8,000-image pool of the page's fixed
// permutation), K train-mode batches per B. Beside it the same distance to the pool's own mean (pure
// sampling noise: should follow 1/sqrt(B)) and the pool mean's distance to the running mean (the floor
// the first distance levels off at). Deterministic: batch k of size B is the first B of permutation
// (seed B * 1000 + k) of the pool.
//
//   node tests/stem_distance.mjs [--model demo-models/resnet18-fashion-mnist.safetensors] [--layer 0] [--k 64]
//                                [--sizes 8,32,256] [--data /usr/share/datasets/fashion-mnist]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../web/bnlab.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const opt = { model: path.join(ROOT, 'demo-models', 'resnet18-fashion-mnist.safetensors'), layer: 0, k: 64, sizes: '8,32,256',
  data: process.env.BNL_FASHION_MNIST || '/usr/share/datasets/fashion-mnist' };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in opt) || process.argv[i + 1] === undefined) { console.error(`stem_distance: error: bad argument ${process.argv[i]}`); process.exit(2); }
  opt[key] = process.argv[i + 1];
}
const POOL = 8000, PERM_SEED = 20261130, EPS = 1e-5;   // as web/worker.mjs
const lab = await createBnLab();
const model = lab.loadModel(readFileSync(opt.model));
const ds = await lab.loadIdxDataset(readFileSync(path.join(opt.data, 't10k-images-idx3-ubyte.gz')),
  readFileSync(path.join(opt.data, 't10k-labels-idx1-ubyte.gz')), { model, fashionMnist: true });
const perm = lab.permutation(ds.count, { seed: PERM_SEED, epoch: 0 });
const S = ds.height, li = Number(opt.layer), K = Number(opt.k);
model.train();
const r0 = model.bnStats(li), C = r0.channels;
const rm = Float64Array.from(r0.runningMean), rs = Float64Array.from(r0.runningVar, (v) => Math.sqrt(v + EPS));
const dist = (m, ref) => { let d = 0; for (let c = 0; c < C; c++) d += Math.abs(m[c] - ref[c]) / rs[c]; return d / C; };
// batch means of the layer for image indices idx (train mode; the running statistics above were read first)
const meanOf = (idx) => { const b = ds.batchIndices(idx); model.forward(b.x, [idx.length, S, S, 3]); return model.bnStats(li).batchMean; };

const pool = new Float64Array(C);
for (let k = 0; k < POOL / 500; k++) {
  const m = meanOf(perm.slice(k * 500, (k + 1) * 500));
  for (let c = 0; c < C; c++) pool[c] += m[c] / (POOL / 500);
}
console.log(`model ${path.basename(opt.model)}, layer ${model.info.bnLayers[li]} (${C} channels), ${K} batches per B, ${S}x${S}`);
console.log(`pool (${POOL} images) mean vs running mean: ${dist(pool, rm).toFixed(4)}`);
console.log('B\tvs running (mean ± s.e.)\tvs pool mean\tsqrt(B) x vs pool');
for (const B of opt.sizes.split(',').map(Number)) {
  let s = 0, s2 = 0, sp = 0;
  for (let k = 0; k < K; k++) {
    const idx = Int32Array.from(lab.permutation(POOL, { seed: B * 1000 + k, epoch: 0 }).slice(0, B), (j) => perm[j]);
    const m = meanOf(idx);
    const d = dist(m, rm);
    s += d; s2 += d * d; sp += dist(m, pool);
  }
  const mean = s / K, se = Math.sqrt(Math.max(0, s2 / K - mean * mean) / (K - 1));
  console.log(`${B}\t${mean.toFixed(4)} ± ${se.toFixed(4)}\t\t${(sp / K).toFixed(4)}\t\t${(Math.sqrt(B) * sp / K).toFixed(3)}`);
}
