// The wasm build, loaded through web/bnlab.mjs exactly as the page loads it, against the PyTorch
// fixtures (tests/fixtures/bn) and against its own scalar reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors, assertClose } from './safetensors.mjs';

const DIR = new URL('../fixtures/bn/', import.meta.url).pathname;
const lab = await createBnLab();
const files = readdirSync(DIR).filter((f) => f.endsWith('.safetensors'));
const TOL = { atol: 1e-5, rtol: 1e-4 };
const ISAS = ['wasmsimd', 'scalar'];

test('the wasm build runs the SIMD128 kernels by default', () => {
  assert.equal(lab.isa, 'wasmsimd');
});

test('fixtures are present', () => {
  assert.ok(files.filter((f) => f.startsWith('bn_standard')).length >= 14, `only ${files.length} fixture files`);
});

for (const isa of ISAS) {
  for (const file of files.filter((f) => !f.includes('cumulative'))) {
    test(`${isa}: ${file} matches PyTorch (train, running stats both rules, eval, backward)`, () => {
      lab.forceIsa(isa);
      try {
        const { tensors: t, metadata } = readSafetensors(DIR + file);
        const [N, H, W, C] = metadata.shape.split(',').map(Number);
        const M = N * H * W, relu = metadata.kind === 'relu';
        const base = { gamma: t.gamma.data, beta: t.beta.data, runningMean: t.running_mean_in.data, runningVar: t.running_var_in.data, relu };
        const tr = lab.batchNorm.forwardTrain(t.x.data, M, C, base);
        assertClose(tr.y, t.train_y.data, { ...TOL, what: 'train y' });
        assertClose(tr.mean, t.batch_mean.data, { ...TOL, what: 'batch mean' });
        assertClose(tr.var, t.batch_var.data, { ...TOL, what: 'batch var' });
        assertClose(tr.runningMean, t.running_mean_out.data, { ...TOL, what: 'running mean' });
        assertClose(tr.runningVar, t.running_var_biased_out.data, { ...TOL, what: 'running var (biased)' });
        assert.equal(tr.numBatchesTracked, 1);
        const tu = lab.batchNorm.forwardTrain(t.x.data, M, C, { ...base, unbiased: true });
        assertClose(tu.runningVar, t.running_var_unbiased_out.data, { ...TOL, what: 'running var (unbiased)' });
        const bw = lab.batchNorm.backwardTrain(t.dy.data, t.x.data, tr, M, C, base);
        assertClose(bw.dx, t.train_dx.data, { ...TOL, what: 'train dx' });
        assertClose(bw.dgamma, t.train_dgamma.data, { ...TOL, what: 'train dgamma' });
        assertClose(bw.dbeta, t.train_dbeta.data, { ...TOL, what: 'train dbeta' });
        const ey = lab.batchNorm.forwardEval(t.x.data, M, C, base);
        assertClose(ey, t.eval_y.data, { ...TOL, what: 'eval y' });
        const be = lab.batchNorm.backwardEval(t.dy.data, t.x.data, M, C, base);
        assertClose(be.dx, t.eval_dx.data, { ...TOL, what: 'eval dx' });
        assertClose(be.dgamma, t.eval_dgamma.data, { ...TOL, what: 'eval dgamma' });
        assertClose(be.dbeta, t.eval_dbeta.data, { ...TOL, what: 'eval dbeta' });
      } finally {
        lab.resetIsa();
      }
    });
  }
}

test('cumulative average (PyTorch momentum=None) over three batches', () => {
  const file = files.find((f) => f.includes('cumulative'));
  const { tensors: t, metadata } = readSafetensors(DIR + file);
  const [N, H, W, C] = metadata.shape.split(',').map(Number);
  let runningMean = t.running_mean_in.data, runningVar = t.running_var_in.data, numBatchesTracked = 0;
  for (let k = 0; k < 3; k++) {
    const r = lab.batchNorm.forwardTrain(t[`x_${k}`].data, N * H * W, C, {
      gamma: t.gamma.data, beta: t.beta.data, runningMean, runningVar, numBatchesTracked, cumulative: true });
    assertClose(r.y, t[`train_y_${k}`].data, { ...TOL, what: `train y ${k}` });
    assertClose(r.runningMean, t[`running_mean_out_${k}`].data, { ...TOL, what: `running mean ${k}` });
    assertClose(r.runningVar, t[`running_var_biased_out_${k}`].data, { ...TOL, what: `running var ${k}` });
    ({ runningMean, runningVar, numBatchesTracked } = r);
  }
  assert.equal(numBatchesTracked, 3);
});

function randn(n, seed) {
  let s = seed >>> 0;
  const u = () => ((s = (s * 1664525 + 1013904223) >>> 0) + 0.5) / 4294967296;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

// SIMD128 against the scalar reference on tile-edge shapes: channels below, at, above and at
// multiples of the 4-lane vector and the 16-channel unrolled chunk; rows across block edges.
test('wasmsimd equals the scalar reference on tile-edge shapes', () => {
  for (const C of [1, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 64, 65]) {
    for (const M of [2, 3, 17, 300, 5000]) {
      const x = randn(M * C, M * 131 + C), dy = randn(M * C, M + C * 7);
      const gamma = randn(C, C + 1).map((v) => 1 + 0.3 * v), beta = randn(C, C + 2);
      const opts = { gamma, beta, relu: (M + C) % 2 === 1 };
      const run = (isa) => {
        lab.forceIsa(isa);
        try {
          const f = lab.batchNorm.forwardTrain(x, M, C, opts);
          const b = lab.batchNorm.backwardTrain(dy, x, f, M, C, opts);
          return { ...f, ...b, ey: lab.batchNorm.forwardEval(x, M, C, { ...opts, runningMean: f.mean, runningVar: f.var }) };
        } finally { lab.resetIsa(); }
      };
      const s = run('scalar'), v = run('wasmsimd');
      for (const k of ['y', 'mean', 'var', 'runningMean', 'runningVar', 'dx', 'dgamma', 'dbeta', 'ey'])
        assertClose(v[k], s[k], { atol: 2e-5, rtol: 2e-4, what: `M=${M} C=${C} ${k}` });
    }
  }
});

test('statistics stay accurate when |mean| >> std (1000 + N(0, 0.01))', () => {
  const M = 100000, C = 4;
  const x = randn(M * C, 5).map((v) => 1000 + 0.01 * v);
  // float64 truth
  const truth = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0; for (let i = 0; i < M; i++) s += x[i * C + c];
    const m = s / M; let q = 0;
    for (let i = 0; i < M; i++) q += (x[i * C + c] - m) ** 2;
    truth[c] = q / M;
  }
  // a naive single-precision E[x^2] - E[x]^2 is useless here
  let s1 = Math.fround(0), s2 = Math.fround(0);
  for (let i = 0; i < M; i++) { const v = x[i * C]; s1 = Math.fround(s1 + v); s2 = Math.fround(s2 + Math.fround(v * v)); }
  const naive = Math.fround(s2 / M) - Math.fround(s1 / M) ** 2;
  assert.ok(Math.abs(naive - truth[0]) > 10 * truth[0], `naive float32 variance unexpectedly good: ${naive} vs ${truth[0]}`);
  for (const isa of ISAS) {
    lab.forceIsa(isa);
    const r = lab.batchNorm.forwardTrain(x, M, C);
    lab.resetIsa();
    for (let c = 0; c < C; c++)
      assert.ok(Math.abs(r.var[c] - truth[c]) <= 1e-3 * truth[c], `${isa} var[${c}] = ${r.var[c]}, truth ${truth[c]}`);
  }
});

test('one value per channel in train mode is a clear error, and the instance survives', () => {
  assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array([1, 2, 3]), 1, 3), /more than 1 value per channel/);
  assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(4), 2, 3), /x has 4 values, expected 6/);
  assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(4), 0, 3), /positive integers/);
  assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(6), 2, 3, { eps: -1 }), /eps must be a positive/);
  const r = lab.batchNorm.forwardTrain(new Float32Array([1, 2, 3, 3, 4, 5]), 2, 3);
  assertClose(r.mean, new Float32Array([2, 3, 4]), { what: 'mean after errors' });
});

test('eval mode never changes the running statistics it is given', () => {
  const C = 5, M = 40, x = randn(M * C, 9);
  const runningMean = randn(C, 1), runningVar = randn(C, 2).map((v) => 1 + v * v);
  const rm0 = runningMean.slice(), rv0 = runningVar.slice();
  lab.batchNorm.forwardEval(x, M, C, { runningMean, runningVar });
  assert.deepEqual(runningMean, rm0);
  assert.deepEqual(runningVar, rv0);
});
