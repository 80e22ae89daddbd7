// The ResNet model through the wasm build, loaded through web/bnlab.mjs exactly as a page loads it:
// against the PyTorch fixtures (tests/fixtures/resnet), against the native binary, against an
// independent float64 JS computation of the stem's batch statistics, and for its error handling,
// state round trips and memory behaviour.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors, parseSafetensors, writeSafetensors, assertClose } from './safetensors.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = join(ROOT, 'tests/fixtures/resnet');
const NATIVE = join(ROOT, 'build/native/bnlab');
const lab = await createBnLab();

function fixture(name) {
  const weightsBytes = new Uint8Array(readFileSync(join(FIX, `${name}.weights.safetensors`)));
  const inp = readSafetensors(join(FIX, `${name}.input.safetensors`)).tensors;
  const { tensors: exp, metadata } = readSafetensors(join(FIX, `${name}.expected.safetensors`));
  return {
    name, weightsBytes, weights: parseSafetensors(weightsBytes).tensors, exp, metadata,
    x: inp.input.data, shape: inp.input.shape, labels: Array.from(inp.labels.data, Number),
  };
}
const R18 = fixture('resnet18');
const R50 = fixture('resnet50');

const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
// logits: |d| <= 1e-4 * max|want| + 1e-4 * |want|
function assertLogits(got, want, what) {
  assertClose(got, want, { atol: 1e-4 * maxAbs(want), rtol: 1e-4, what });
}
const TOL = { atol: 1e-5, rtol: 1e-4 };

// Every tensor of a saved state against fixture tensors `${prefix}${name}`; I64 compared exactly.
function assertState(savedBytes, exp, prefix, names, tol = TOL) {
  const { tensors } = parseSafetensors(savedBytes);
  for (const k of names) {
    const want = exp[prefix + k];
    assert.ok(want, `fixture has no ${prefix}${k}`);
    const got = tensors[k];
    assert.ok(got, `saved state has no tensor '${k}'`);
    assert.deepEqual(got.shape, want.shape, `${k}: shape`);
    if (want.dtype === 'I64') assert.deepEqual(Array.from(got.data, Number), Array.from(want.data, Number), `${k}`);
    else assertClose(got.data, want.data, { ...tol, what: `${prefix}${k}` });
  }
}

// ---- against PyTorch --------------------------------------------------------------------------

for (const F of [R18, R50]) {
  test(`${F.name}: info read from the file`, () => {
    const m = lab.loadModel(F.weightsBytes);
    try {
      const want = F.name === 'resnet18'
        ? { blocks: [2, 2, 2, 2], block: 'basic', numClasses: 7, numParams: 64739, bn: 20 }
        : { blocks: [3, 4, 6, 3], block: 'bottleneck', numClasses: 10, numParams: 70386, bn: 53 };
      assert.deepEqual(m.info.blocks, want.blocks);
      assert.equal(m.info.block, want.block);
      assert.equal(m.info.numClasses, want.numClasses);
      assert.equal(m.info.numParams, want.numParams);
      assert.equal(m.info.bnLayers.length, want.bn);
      assert.equal(m.info.bnLayers[0], 'bn1');
      if (F.name === 'resnet50') assert.equal(m.info.labels[9], 'truck');
    } finally { m.dispose(); }
  });

  test(`${F.name}: eval and train-mode logits match PyTorch`, () => {
    const m = lab.loadModel(F.weightsBytes);
    try {
      assert.equal(m.training, false, 'a loaded model starts in eval mode');
      assertLogits(m.forward(F.x, F.shape), F.exp.logits_eval.data, 'logits_eval');
      m.train();
      assertLogits(m.forward(F.x, F.shape), F.exp.logits_train.data, 'logits_train');
    } finally { m.dispose(); }
  });
}

test('resnet18: running stats after a train forward, biased rule (default)', () => {
  const m = lab.loadModel(R18.weightsBytes);
  try {
    m.train();
    m.forward(R18.x, R18.shape);
    for (const L of m.info.bnLayers) {
      const s = m.bnStats(L);
      assertClose(s.runningMean, R18.exp[`after_train_forward_biased.${L}.running_mean`].data, { ...TOL, what: `${L} running_mean` });
      assertClose(s.runningVar, R18.exp[`after_train_forward_biased.${L}.running_var`].data, { ...TOL, what: `${L} running_var` });
      assert.equal(s.numBatchesTracked, Number(R18.exp[`after_train_forward_biased.${L}.num_batches_tracked`].data[0]));
      assertClose(s.batchMean, R18.exp[`train_batch_mean.${L}`].data, { ...TOL, what: `${L} batch mean` });
      assertClose(s.batchVar, R18.exp[`train_batch_var.${L}`].data, { ...TOL, what: `${L} batch var` });
    }
    // the saved state carries the same buffers
    const names = m.info.bnLayers.flatMap((L) => [`${L}.running_mean`, `${L}.running_var`, `${L}.num_batches_tracked`]);
    assertState(m.saveState(), R18.exp, 'after_train_forward_biased.', names);
  } finally { m.dispose(); }
});

test('resnet18: whole state after a train forward, unbiased rule (PyTorch)', () => {
  const m = lab.loadModel(R18.weightsBytes);
  try {
    m.setBatchNorm({ unbiased: true });
    m.train();
    m.forward(R18.x, R18.shape);
    assertState(m.saveState(), R18.exp, 'after_train_forward.', Object.keys(R18.weights));
  } finally { m.dispose(); }
});

for (const F of [R18, R50]) {
  test(`${F.name}: state after one SGD step (lr 0.1, momentum 0.9, weight decay 1e-4, unbiased)`, () => {
    const m = lab.loadModel(F.weightsBytes);
    try {
      m.setBatchNorm({ unbiased: true });
      const loss = m.step(F.x, F.shape, F.labels, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
      assertClose([loss], F.exp.step_loss.data, { ...TOL, what: 'step loss' });
      assertState(m.saveState(), F.exp, 'after_step.', Object.keys(F.weights), { atol: 1e-5, rtol: 1e-4 });
    } finally { m.dispose(); }
  });
}

for (const [dt, file] of [['f16', 'resnet18.weights_f16.safetensors'], ['bf16', 'resnet18.weights_bf16.safetensors']]) {
  test(`resnet18: ${dt.toUpperCase()} weights give logits_eval_from_${dt}`, () => {
    const m = lab.loadModel(new Uint8Array(readFileSync(join(FIX, file))));
    try {
      assertLogits(m.forward(R18.x, R18.shape), R18.exp[`logits_eval_from_${dt}`].data, `logits_eval_from_${dt}`);
    } finally { m.dispose(); }
  });
}

// ---- against the native binary ----------------------------------------------------------------

for (const F of [R18, R50]) {
  for (const mode of ['eval', 'train']) {
    test(`${F.name}: wasm forward equals native 'bnlab infer --mode ${mode}'`, (t) => {
      if (!existsSync(NATIVE)) { t.skip(`${NATIVE} not built`); return; }
      const dir = mkdtempSync(join(tmpdir(), 'bnlab-node-'));
      try {
        const W = join(dir, 'w.safetensors'), X = join(dir, 'x.safetensors'), Y = join(dir, 'y.safetensors');
        writeFileSync(W, F.weightsBytes);
        writeFileSync(X, writeSafetensors({ input: { dtype: 'F32', shape: F.shape, data: F.x } }));
        execFileSync(NATIVE, ['infer', '--weights', W, '--input', X, '--output', Y, '--mode', mode], { stdio: 'pipe' });
        const { tensors } = readSafetensors(Y);
        assert.deepEqual(tensors.logits.shape, [F.shape[0], F.exp.logits_eval.shape[1]]);
        const m = lab.loadModel(F.weightsBytes);
        try {
          if (mode === 'train') m.train();
          const got = m.forward(F.x, F.shape), want = tensors.logits.data;
          assertClose(got, want, { atol: 1e-5 * maxAbs(want), rtol: 0, what: `wasm vs native ${mode} logits` });
        } finally { m.dispose(); }
      } finally { rmSync(dir, { recursive: true, force: true }); }
    });
  }
}

// ---- BatchNorm statistics ---------------------------------------------------------------------

// conv1 of torchvision: 7x7, stride 2, pad 3, no bias; weight OIHW, input NHWC; float64.
function stemConv(x, [N, H, W, C], w, [O, I, KH, KW]) {
  assert.equal(I, C);
  const P = Math.floor((H + 6 - KH) / 2) + 1, Q = Math.floor((W + 6 - KW) / 2) + 1;
  const y = new Float64Array(N * P * Q * O);
  for (let n = 0; n < N; n++)
    for (let p = 0; p < P; p++)
      for (let q = 0; q < Q; q++)
        for (let o = 0; o < O; o++) {
          let s = 0;
          for (let r = 0; r < KH; r++) {
            const h = 2 * p - 3 + r;
            if (h < 0 || h >= H) continue;
            for (let k = 0; k < KW; k++) {
              const v = 2 * q - 3 + k;
              if (v < 0 || v >= W) continue;
              for (let c = 0; c < C; c++) s += x[((n * H + h) * W + v) * C + c] * w[((o * I + c) * KH + r) * KW + k];
            }
          }
          y[((n * P + p) * Q + q) * O + o] = s;
        }
  return { y, M: N * P * Q, C: O };
}

function channelStats(y, M, C) {
  const mean = new Float64Array(C), v = new Float64Array(C);
  for (let i = 0; i < M; i++) for (let c = 0; c < C; c++) mean[c] += y[i * C + c];
  for (let c = 0; c < C; c++) mean[c] /= M;
  for (let i = 0; i < M; i++) for (let c = 0; c < C; c++) v[c] += (y[i * C + c] - mean[c]) ** 2;
  for (let c = 0; c < C; c++) v[c] /= M;
  return { mean, var: v };
}

for (const F of [R18, R50]) {
  test(`${F.name}: bnStats('bn1') is the mean and biased variance of conv1(x), computed in JS`, () => {
    const cw = F.weights['conv1.weight'];
    const { y, M, C } = stemConv(F.x, F.shape, cw.data, cw.shape);
    const want = channelStats(y, M, C);
    const m = lab.loadModel(F.weightsBytes);
    try {
      const s0 = m.bnStats('bn1');
      assert.equal(s0.batchMean, null, 'batchMean before any train forward');
      assert.equal(s0.batchVar, null, 'batchVar before any train forward');
      m.eval().forward(F.x, F.shape);
      assert.equal(m.bnStats('bn1').batchMean, null, 'an eval forward makes no batch statistics');
      m.train().forward(F.x, F.shape);
      const s = m.bnStats('bn1');
      assert.equal(s.layer, 'bn1');
      assert.equal(s.channels, C);
      assertClose(s.batchMean, want.mean, { atol: 1e-4 * maxAbs(want.mean), rtol: 1e-4, what: 'bn1 batch mean' });
      assertClose(s.batchVar, want.var, { atol: 0, rtol: 1e-4, what: 'bn1 batch var' });
    } finally { m.dispose(); }
  });
}

// N*H*W at a BatchNorm layer of a basic-block ResNet (every BN of stage s runs at the stage's output size).
function elementsPerChannel(L, [N, H, W]) {
  const down = (v, k, s, p) => Math.floor((v + 2 * p - k) / s) + 1;
  let h = down(H, 7, 2, 3), w = down(W, 7, 2, 3);
  if (L === 'bn1') return N * h * w;
  h = down(h, 3, 2, 1), w = down(w, 3, 2, 1);
  for (let s = 2; s <= Number(L[5]); s++) h = down(h, 3, 2, 1), w = down(w, 3, 2, 1);
  return N * h * w;
}

// running = momentum * running + (1 - momentum) * batch, per layer, for both variance rules.
for (const unbiased of [false, true]) {
  test(`resnet18: a train forward updates running stats as 0.9*old + 0.1*batch (Flax; ${unbiased ? 'unbiased' : 'biased'} var)`, () => {
    const m = lab.loadModel(R18.weightsBytes);
    try {
      if (unbiased) m.setBatchNorm({ unbiased: true });
      const before = Object.fromEntries(m.info.bnLayers.map((L) => [L, m.bnStats(L)]));
      m.train().forward(R18.x, R18.shape);
      for (const L of m.info.bnLayers) {
        const old = before[L], s = m.bnStats(L);
        const n = elementsPerChannel(L, R18.shape);
        const wantMean = old.runningMean.map((v, c) => 0.9 * v + 0.1 * s.batchMean[c]);
        const corr = unbiased ? n / (n - 1) : 1;   // PyTorch's rule: batch var * n/(n-1)
        const wantVar = old.runningVar.map((v, c) => 0.9 * v + 0.1 * s.batchVar[c] * corr);
        assertClose(s.runningMean, wantMean, { atol: 1e-7, rtol: 1e-6, what: `${L} running mean` });
        assertClose(s.runningVar, wantVar, { atol: 1e-7, rtol: 1e-6, what: `${L} running var` });
        assert.equal(s.numBatchesTracked, old.numBatchesTracked + 1);
      }
    } finally { m.dispose(); }
  });
}

test('eval mode leaves running stats bit-identical; model.training follows train()/eval()', () => {
  const m = lab.loadModel(R18.weightsBytes);
  try {
    assert.equal(m.training, false);
    assert.equal(m.train(), m, 'train() returns the model');
    assert.equal(m.training, true);
    m.forward(R18.x, R18.shape);   // make some batch statistics and move the running ones
    m.eval();
    assert.equal(m.training, false);
    const snap = () => m.info.bnLayers.map((L) => m.bnStats(L));
    const before = snap();
    const l0 = m.forward(R18.x, R18.shape);
    for (let i = 0; i < 3; i++) assert.deepEqual(m.forward(R18.x, R18.shape), l0, 'eval forward is deterministic');
    m.forward(R18.x.map((v) => 2 * v + 1), R18.shape);
    const after = snap();
    for (let i = 0; i < before.length; i++) {
      const L = m.info.bnLayers[i];
      assert.deepEqual(new Uint32Array(after[i].runningMean.buffer), new Uint32Array(before[i].runningMean.buffer), `${L} runningMean`);
      assert.deepEqual(new Uint32Array(after[i].runningVar.buffer), new Uint32Array(before[i].runningVar.buffer), `${L} runningVar`);
      assert.equal(after[i].numBatchesTracked, before[i].numBatchesTracked);
      // batch stats of the last train forward are still what bnStats reports
      assert.deepEqual(after[i].batchMean, before[i].batchMean);
    }
    // and train() again moves them
    m.train().forward(R18.x, R18.shape);
    assert.notDeepEqual(m.bnStats('bn1').runningMean, before[0].runningMean);
  } finally { m.dispose(); }
});

// ---- state round trip ---------------------------------------------------------------------------

test('step -> saveState -> loadModel round-trips bit-exactly', () => {
  const m = lab.loadModel(R18.weightsBytes);
  let m2;
  try {
    m.step(R18.x, R18.shape, R18.labels, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
    const saved = m.saveState();
    assert.ok(saved instanceof Uint8Array);
    const { tensors } = parseSafetensors(saved);
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(R18.weights).sort(), 'same names as the loaded file');
    m2 = lab.loadModel(saved);
    assert.deepEqual(m2.saveState(), saved, 'saveState of the reloaded model equals the first byte for byte');
    m.eval(); m2.eval();
    assert.deepEqual(m2.forward(R18.x, R18.shape), m.forward(R18.x, R18.shape), 'eval logits');
    m.train(); m2.train();
    assert.deepEqual(m2.forward(R18.x, R18.shape), m.forward(R18.x, R18.shape), 'train logits');
    assert.deepEqual(m2.saveState(), m.saveState(), 'states after the same train forward');
    // the step moved the weights: logits differ from the fixture's
    m.eval();
    assert.notDeepEqual(m.forward(R18.x, R18.shape), R18.exp.logits_eval.data);
  } finally { m.dispose(); m2?.dispose(); }
});

test('a file loaded and saved unchanged is the same tensors', () => {
  const m = lab.loadModel(R18.weightsBytes);
  try {
    const { tensors } = parseSafetensors(m.saveState());
    for (const [k, want] of Object.entries(R18.weights)) {
      assert.deepEqual(tensors[k].shape, want.shape, k);
      assert.deepEqual(tensors[k].data, want.data, k);
    }
  } finally { m.dispose(); }
});

// ---- errors -------------------------------------------------------------------------------------

const HDR_LEN = Number(new DataView(R18.weightsBytes.buffer, R18.weightsBytes.byteOffset).getBigUint64(0, true));
const HEADER = JSON.parse(new TextDecoder().decode(R18.weightsBytes.subarray(8, 8 + HDR_LEN)));
const BODY = R18.weightsBytes.subarray(8 + HDR_LEN);

function withHeader(edit) {
  const h = structuredClone(HEADER);
  edit(h);
  const hb = new TextEncoder().encode(JSON.stringify(h));
  const out = new Uint8Array(8 + hb.length + BODY.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  out.set(BODY, 8 + hb.length);
  return out;
}
function withTensors(edit) {
  const t = { ...R18.weights };
  edit(t);
  return writeSafetensors(t);
}
const f32 = (shape) => ({ dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });

const BAD_FILES = [
  ['not safetensors (too short)', new Uint8Array([1, 2, 3]), /too short/],
  ['header length beyond the file', (() => {
    const b = R18.weightsBytes.slice();
    new DataView(b.buffer).setBigUint64(0, BigInt(b.length * 2), true);
    return b;
  })(), /header length .*beyond/],
  ['bad JSON', (() => { const b = R18.weightsBytes.slice(); b[8] = 0x7a; return b; })(), /JSON/],
  ['bad JSON (truncated object)', (() => {
    const hb = new TextEncoder().encode('{"conv1.weight": {"dtype": "F32", ');
    const b = new Uint8Array(8 + hb.length);
    new DataView(b.buffer).setBigUint64(0, BigInt(hb.length), true);
    b.set(hb, 8);
    return b;
  })(), /JSON/],
  ['offsets out of range', withHeader((h) => { h['fc.bias'].data_offsets = [BODY.length, BODY.length + 28]; }), /fc\.bias.*out of range/],
  ['overlapping offsets', withHeader((h) => {
    const [b] = h['fc.weight'].data_offsets;
    h['fc.bias'].data_offsets = [b, b + 28];
  }), /overlap/],
  ['unknown dtype', withHeader((h) => { h['fc.bias'].dtype = 'Q7'; }), /fc\.bias.*unknown dtype 'Q7'/],
  ['shape not matching byte size', withHeader((h) => { h['fc.bias'].shape = [8]; }), /fc\.bias.*shape does not match byte size/],
  ['a missing tensor', withTensors((t) => { delete t['layer1.0.bn1.running_var']; }), /missing tensor 'layer1\.0\.bn1\.running_var'/],
  ['an unexpected extra tensor', withTensors((t) => { t['layer1.0.extra.weight'] = f32([2]); }), /unexpected tensor 'layer1\.0\.extra\.weight'/],
  ['an unexpected extra tensor (top level)', withTensors((t) => { t.head_weight = f32([2]); }), /unexpected tensor 'head_weight'/],
  ['a conv weight of the wrong shape', withTensors((t) => { t['layer1.0.conv2.weight'] = f32([8, 8, 3, 2]); }),
    /layer1\.0\.conv2\.weight.*\[8,8,3,2\]/],
  ['a BN vector of the wrong length', withTensors((t) => { t['layer2.0.bn1.weight'] = f32([13]); }), /layer2\.0\.bn1\.weight/],
  ['an array instead of a Uint8Array', [1, 2, 3], /Uint8Array/],
  ['a string instead of a Uint8Array', 'conv1.weight', /Uint8Array/],
  ['undefined', undefined, /Uint8Array/],
];

for (const [what, bytes, re] of BAD_FILES) {
  test(`loadModel rejects ${what} with a clear Error, and the instance stays usable`, () => {
    assert.throws(() => lab.loadModel(bytes), (e) => e instanceof Error && re.test(e.message) && /^bnlab: /.test(e.message));
    const m = lab.loadModel(R18.weightsBytes);
    try { assertLogits(m.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after the error'); } finally { m.dispose(); }
  });
}

test('bad calls on a model throw clear Errors and the model keeps working', () => {
  const m = lab.loadModel(R18.weightsBytes);
  try {
    const [N, H, W] = R18.shape;
    const cases = [
      [() => m.forward(new Float32Array(N * H * W * 4), [N, H, W, 4]), /input has 4 channels, the model expects 3/],
      [() => m.forward(new Float32Array(10), R18.shape), /input has 10 values, expected 8640/],
      [() => m.forward(R18.x, [N, H, W]), /shape must be \[n, h, w, c\]/],
      [() => m.forward(R18.x, [N, H, W, 1.5]), /shape must be \[n, h, w, c\]/],
      [() => m.forward(new Float32Array(3), [1, 1, 1, 3].map((v, i) => (i === 1 ? 0 : v))), /positive integers/],
      [() => m.forward(null, R18.shape), /input/],
      [() => m.forward('x'.repeat(8640), R18.shape), /input must be a Float32Array/],
      [() => m.forward({ length: 8640 }, R18.shape), /input must be a Float32Array/],
      [() => m.step(R18.x, R18.shape, [0, 7], { lr: 0.1 }), /label 7 .*outside \[0, 7\)/],
      [() => m.step(R18.x, R18.shape, [-1, 0], { lr: 0.1 }), /label -1 .*outside/],
      [() => m.step(R18.x, R18.shape, [0], { lr: 0.1 }), /1 labels for a batch of 2/],
      [() => m.step(R18.x, R18.shape, [0, 0.5], { lr: 0.1 }), /not an integer/],
      [() => m.bnStats('layer9.0.bn1'), /no BatchNorm layer named "layer9\.0\.bn1"/],
      [() => m.bnStats(1000), /no BatchNorm layer/],
      [() => m.setBatchNorm({ momentum: 2 }), /momentum/],
      [() => m.setBatchNorm({ eps: -1 }), /eps/],
      [() => m.train().forward(new Float32Array(3), [1, 1, 1, 3]), /more than 1 value per channel/],
    ];
    for (const [fn, re] of cases) {
      assert.throws(fn, (e) => e instanceof Error && re.test(e.message), `expected ${re}`);
      m.eval();
    }
    assert.equal(m.bnStats('bn1').batchMean, null, 'failed calls made no batch statistics');
    assertLogits(m.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after the errors');
    m.train();
    assertLogits(m.forward(R18.x, R18.shape), R18.exp.logits_train.data, 'train logits after the errors');
  } finally { m.dispose(); }
});

test('using a disposed model throws; dispose twice is harmless', () => {
  const m = lab.loadModel(R18.weightsBytes);
  m.dispose();
  m.dispose();
  for (const fn of [() => m.forward(R18.x, R18.shape), () => m.bnStats('bn1'), () => m.saveState(),
    () => m.step(R18.x, R18.shape, R18.labels), () => m.train(), () => m.eval(), () => m.setBatchNorm({})])
    assert.throws(fn, /disposed/);
  const m2 = lab.loadModel(R18.weightsBytes);
  try { assertLogits(m2.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after dispose'); } finally { m2.dispose(); }
});

// ---- memory -------------------------------------------------------------------------------------

test('100 load/forward/step/save/dispose cycles do not grow wasm memory', () => {
  const own = lab;   // the shared instance: leaks anywhere in the file would show here too
  const cycle = () => {
    const m = own.loadModel(R18.weightsBytes);
    m.forward(R18.x, R18.shape);
    m.step(R18.x, R18.shape, R18.labels, { lr: 0.01, momentum: 0.9 });
    m.train().forward(R18.x, R18.shape);
    m.bnStats('layer4.1.bn2');
    m.saveState();
    m.dispose();
  };
  for (let i = 0; i < 10; i++) cycle();
  const after10 = own.memoryBytes;
  for (let i = 10; i < 100; i++) cycle();
  assert.ok(own.memoryBytes <= after10 + (1 << 20), `memory grew from ${after10} to ${own.memoryBytes} bytes`);
});

// resnet18's layout with a wide stem (S channels): big activations from a small file and input.
function wideStem(S) {
  return withTensors((t) => {
    const keep = { ...t };
    for (const k of Object.keys(t)) delete t[k];
    const put = (k, shape, v) => { t[k] = f32(shape); if (v) t[k].data.fill(v); };
    for (const [k, v] of Object.entries(keep)) {
      if (k === 'conv1.weight') put(k, [S, 3, 7, 7], 0.01);
      else if (k.startsWith('bn1.') && v.dtype === 'F32') put(k, [S], /weight|var/.test(k) ? 1 : 0);
      else if (k === 'layer1.0.conv1.weight') put(k, [8, S, 3, 3], 0.001);
      else t[k] = v;
      if (k === 'layer1.0.bn2.num_batches_tracked') {   // in != out channels: a downsample appears
        put('layer1.0.downsample.0.weight', [8, S, 1, 1], 0.001);
        put('layer1.0.downsample.1.weight', [8], 1);
        put('layer1.0.downsample.1.bias', [8]);
        put('layer1.0.downsample.1.running_mean', [8]);
        put('layer1.0.downsample.1.running_var', [8], 1);
      }
    }
  });
}

test('absurd requests throw clear Errors and the instance stays usable', () => {
  const own = lab;
  const m = own.loadModel(R18.weightsBytes);
  try {
    assert.throws(() => m.forward(new Float32Array(4), [65536, 8192, 8192, 3]), /too large/);
    assert.throws(() => own.batchNorm.forwardTrain(new Float32Array(4), 1 << 20, 1 << 20), /M\*C < 2\^30/);
    assertLogits(m.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after the errors');
  } finally { m.dispose(); }
});

test('an activation plan over 2 GB in all runs: its three buffers (~0.76 GB each) are allocated apart', async () => {
  // 64 images of 75x75 through a 2048-channel stem: three 64x38x38x2048 float buffers = 2.27 GB.
  // As one allocation (before) the threaded build's malloc refused it; a ResNet-50 batch of 256 at
  // 224x224 in the page (3 x 822 MB, the threaded build) is the case this is for. Both builds.
  for (const threads of [1, 2]) {
    const own = threads === 1 ? lab : await createBnLab({ threads });
    const m = own.loadModel(wideStem(2048));
    try {
      const N = 64, H = 75;
      const y = m.forward(new Float32Array(N * H * H * 3).fill(0.5), [N, H, H, 3]);
      assert.equal(y.length, N * 7, `threads=${threads}`);
      assert.ok(y.every(Number.isFinite), `threads=${threads}`);
    } finally { m.dispose(); }
  }
});

test('an activation plan that cannot fit in 4 GiB of wasm memory is a clear Error', () => {
  // stem 2048 channels on 899x899: three 450x450x2048 float buffers (1.66 GB each, allocated apart)
  // = 5.0 GB > the 4 GiB wasm limit.
  const own = lab;
  const m = own.loadModel(wideStem(2048));
  try {
    const H = 899, x = new Float32Array(H * H * 3).fill(0.5);
    assert.throws(() => m.forward(x, [1, H, H, 3]), (e) => e instanceof Error && /out of memory|too large/.test(e.message));
    // the same model still runs a batch that fits
    const y = m.forward(new Float32Array(16 * 16 * 3).fill(0.5), [1, 16, 16, 3]);
    assert.equal(y.length, 7);
    assert.ok(y.every(Number.isFinite));
  } finally { m.dispose(); }
  const m2 = own.loadModel(R18.weightsBytes);
  try { assertLogits(m2.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after the error'); } finally { m2.dispose(); }
});

// Regression: plan() once summed the step plan's activation sizes in wasm32's 32-bit size_t; here
// the sum is just above 2^32 and used to wrap, so conv1 wrote past a too-small arena.
test('a step whose activation plan overflows 32 bits is a clear Error', async () => {
  const own = await createBnLab();   // its own instance: the bug corrupts the heap
  const m = own.loadModel(wideStem(4096));
  const H = 766, x = new Float32Array(H * H * 3).fill(0.5);
  assert.throws(() => m.step(x, [1, H, H, 3], [0], { lr: 0.1 }),
    (e) => e instanceof Error && !(e instanceof WebAssembly.RuntimeError) && /out of memory|too large/.test(e.message));
  const m2 = own.loadModel(R18.weightsBytes);
  assertLogits(m2.forward(R18.x, R18.shape), R18.exp.logits_eval.data, 'logits after the error');
});
