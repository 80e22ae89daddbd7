// The threaded wasm build (web/threads/, src/core/parallel.c's pthread pool) against the
// single-thread build (web/bnlab.wasm): bitwise the same logits, BatchNorm statistics, loss and
// saved state on 1, 2 and 3 threads; errors still Errors; memory given back; a worker that fails
// is reported, not waited for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// the demo model: a quarter-width ResNet-50, big enough at 64x64, batch 16, for every parallel
// loop (GEMM tasks, split reductions, BatchNorm chunks, elementwise passes) to fork
const WEIGHTS = new Uint8Array(readFileSync(`${ROOT}demo-models/resnet50-procedural.safetensors`));
const SHAPE = [16, 64, 64, 3];

function input() {
  const x = new Float32Array(SHAPE.reduce((a, b) => a * b, 1));
  let s = 7;
  for (let i = 0; i < x.length; i++) x[i] = ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 4 - 2;
  return x;
}
const X = input();
const LABELS = Array.from({ length: SHAPE[0] }, (_, i) => i % 10);

// Everything the page reads after a train-mode batch and one SGD step.
function run(lab) {
  const m = lab.loadModel(WEIGHTS);
  try {
    m.eval();
    const evalLogits = m.forward(X, SHAPE);
    m.train();
    const logits = m.forward(X, SHAPE);
    const stats = m.info.bnLayers.map((name) => m.bnStats(name));
    const loss = m.step(X, SHAPE, LABELS, { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
    const state = m.saveState();
    return { evalLogits, logits, stats, loss, state };
  } finally {
    m.dispose();
  }
}

function sameBits(a, b, what) {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength), y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  assert.equal(x.length, y.length, `${what}: length`);
  for (let i = 0; i < x.length; i++)
    if (x[i] !== y[i]) assert.fail(`${what}: not bitwise equal at byte ${i} (element ${Math.floor(i / 4)})`);
}

function assertSameRun(got, want, what) {
  sameBits(got.evalLogits, want.evalLogits, `${what}: eval logits`);
  sameBits(got.logits, want.logits, `${what}: train logits`);
  got.stats.forEach((s, i) => {
    for (const k of ['batchMean', 'batchVar', 'runningMean', 'runningVar'])
      sameBits(s[k], want.stats[i][k], `${what}: ${s.layer}.${k}`);
  });
  sameBits(new Float32Array([got.loss]), new Float32Array([want.loss]), `${what}: loss`);
  sameBits(got.state, want.state, `${what}: saved state after a step`);
}

const single = await createBnLab({ threads: 1 });
const REF = run(single);

test('the single-thread build says so', () => {
  assert.equal(single.build, 'simd');
  assert.equal(single.threads, 1);
});

for (const threads of [1, 2, 3]) {
  test(`threaded build on ${threads} thread(s): bitwise the single-thread build's logits, statistics, loss and state`, async () => {
    const lab = await createBnLab({ threads, build: 'simd-threads' });
    try {
      assert.equal(lab.build, 'simd-threads');
      assert.equal(lab.threads, threads);
      assertSameRun(run(lab), REF, `${threads} threads`);
    } finally {
      lab.terminate();
    }
  });
}

test('default threads in Node: every core, the threaded build', async () => {
  const os = await import('node:os');
  const lab = await createBnLab();
  try {
    assert.equal(lab.threads, os.availableParallelism());
    assert.equal(lab.build, os.availableParallelism() > 1 ? 'simd-threads' : 'simd');
  } finally {
    lab.terminate();
  }
});

test('bad options are Errors naming the option', async () => {
  for (const threads of [0, -1, 1.5, '2', 65])
    await assert.rejects(createBnLab({ threads }), (e) => e instanceof Error && /threads/.test(e.message), String(threads));
  await assert.rejects(createBnLab({ threads: 2, build: 'simd' }), /one thread/);
  await assert.rejects(createBnLab({ build: 'gpu' }), /build must be/);
});

test('threaded build: every bad call is an Error and the lab stays usable; memory is given back', async () => {
  const lab = await createBnLab({ threads: 2 });
  try {
    assert.throws(() => lab.loadModel(new Uint8Array([1, 2, 3])), (e) => e instanceof Error && /bnlab:/.test(e.message));
    const m = lab.loadModel(WEIGHTS);
    assert.throws(() => m.forward(X, [16, 64, 64]), (e) => e instanceof Error && /shape/.test(e.message));
    assert.throws(() => m.forward(X.subarray(1), SHAPE), (e) => e instanceof Error && /input/.test(e.message));
    assert.throws(() => m.bnStats('no.such.layer'), (e) => e instanceof Error && /no BatchNorm layer/.test(e.message));
    assert.throws(() => m.step(X, SHAPE, [1, 2], { lr: 0.1 }), (e) => e instanceof Error && /labels/.test(e.message));
    m.train();
    m.forward(X, SHAPE);
    m.dispose();
    // the same work again and again: the bytes in use come back (the GEMM keeps two scratch blocks
    // cached, whose sizes depend on which thread asked first: a small, bounded difference; a leaked
    // model, activations or gradients would add megabytes per round)
    const inUse = [];
    for (let i = 0; i < 6; i++) {
      const mm = lab.loadModel(WEIGHTS);
      mm.train();
      mm.forward(X, SHAPE);
      mm.step(X, SHAPE, LABELS, { lr: 0.01 });
      mm.dispose();
      inUse.push(lab._ex.bnl_wasm_heap_in_use());
    }
    const slack = 2 << 20;
    assert.ok(inUse[5] <= inUse[1] + slack, `bytes in use grew from ${inUse[1]} to ${inUse[5]} over repeated runs (${inUse})`);
  } finally {
    lab.terminate();
  }
});

test('a worker thread that fails is reported as an Error, not waited for; the lab then refuses work', { timeout: 60000 }, async () => {
  const lab = await createBnLab({ threads: 2 });
  assert.throws(() => lab._ex.bnl_wasm_test_trap_thread(1), (e) => e instanceof Error && /thread failed/.test(e.message));
  await new Promise((r) => setTimeout(r, 50));   // the worker's own error event arrives too
  assert.throws(() => lab.loadModel(WEIGHTS), (e) => e instanceof Error && /cannot be used any more/.test(e.message));
  lab.terminate();
  // a new lab works
  const fresh = await createBnLab({ threads: 2 });
  try {
    assertSameRun(run(fresh), REF, 'a new lab after a failed one');
  } finally {
    fresh.terminate();
  }
});
