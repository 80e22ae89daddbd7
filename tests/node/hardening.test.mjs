// Hardening of the wasm build (web/bnlab.mjs + bnlab.wasm) against bad input, beyond the error
// cases of model.test.mjs: a few hundred randomly mutated weight files (each loads or throws an
// Error, never a WebAssembly.RuntimeError, and leaks nothing), exotic tensor shapes and dtypes,
// odd input shapes, absurd batch sizes, and real out-of-memory inside the C core (the wasm heap
// filled up to its 4 GiB limit first). After every one of them the same instance still gives
// PyTorch's logits for the fixture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors, parseSafetensors, writeSafetensors, assertClose } from './safetensors.mjs';
import { mulberry32 } from '../../web/crops.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = join(ROOT, 'tests/fixtures/resnet');
const lab = await createBnLab();

const weightsBytes = new Uint8Array(readFileSync(join(FIX, 'resnet18.weights.safetensors')));
const weights = parseSafetensors(weightsBytes).tensors;
const inp = readSafetensors(join(FIX, 'resnet18.input.safetensors')).tensors;
const exp = readSafetensors(join(FIX, 'resnet18.expected.safetensors')).tensors;
const X = inp.input.data, SHAPE = inp.input.shape, LABELS = Array.from(inp.labels.data, Number);
// what the message should show of a shape (NaN and Infinity print as null in JSON)
const showShapeForTest = (v) => { try { return JSON.stringify(v) ?? String(v); } catch { return String(v); } };
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

// The instance is still right: PyTorch's eval logits for the fixture from a fresh load.
function assertInstanceUsable(own, what) {
  const m = own.loadModel(weightsBytes);
  try {
    const want = exp.logits_eval.data;
    assertClose(m.forward(X, SHAPE), want, { atol: 1e-4 * maxAbs(want), rtol: 1e-4, what: `logits after ${what}` });
  } finally { m.dispose(); }
}

// A clean failure: an Error from the bridge with a message, not a trap of the wasm module.
function assertCleanError(e, what) {
  assert.ok(e instanceof Error, `${what}: threw ${e}`);
  assert.ok(!(e instanceof WebAssembly.RuntimeError), `${what}: wasm trap: ${e.message}`);
  assert.match(e.message, /^bnlab: \S/, `${what}: message`);
}

// Deterministic pseudo-random numbers (mulberry32, web/crops.mjs).
const rng = mulberry32;

const HDR_LEN = Number(new DataView(weightsBytes.buffer, weightsBytes.byteOffset).getBigUint64(0, true));
const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x22, 0x2c, 0x3a, 0x5b, 0x5d, 0x7b, 0x7d, 0x30, 0x39, 0x2d, 0x5c];

// One mutant of the valid file: byte changes in the JSON header (where the structure is), anywhere,
// a header length off by some, a truncation, or bytes inserted or removed.
function mutate(r) {
  const pick = (n) => Math.floor(r() * n);
  const kind = pick(6);
  let b = weightsBytes.slice();
  if (kind <= 1) {   // 1..4 bytes of the header
    for (let k = 1 + pick(4); k > 0; k--) b[8 + pick(HDR_LEN)] = r() < 0.5 ? INTERESTING[pick(INTERESTING.length)] : pick(256);
  } else if (kind === 2) {   // anywhere (mostly the data: loads, maybe with NaN weights)
    for (let k = 1 + pick(8); k > 0; k--) b[pick(b.length)] = pick(256);
  } else if (kind === 3) {   // the header length
    const dv = new DataView(b.buffer);
    const deltas = [-1, 1, -8, 8, 4096, -HDR_LEN, 2 ** 32, 2 ** 40];
    dv.setBigUint64(0, BigInt(Math.max(0, HDR_LEN + deltas[pick(deltas.length)])), true);
    if (r() < 0.3) dv.setUint8(pick(8), pick(256));
  } else if (kind === 4) {   // truncated
    b = b.subarray(0, pick(r() < 0.5 ? 8 + HDR_LEN + 16 : b.length));
  } else {   // bytes inserted into or removed from the header
    const at = 8 + pick(HDR_LEN), n = 1 + pick(6);
    if (r() < 0.5) b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + n)]);
    else b = Uint8Array.from([...b.subarray(0, at), ...Array.from({ length: n }, () => pick(256)), ...b.subarray(at)]);
  }
  return { kind, bytes: b };
}

test('300 random mutations of a valid weight file: each loads or throws a clear Error, nothing leaks', () => {
  const own = lab;
  const r = rng(20240611);
  const N = 300, counts = { loaded: 0, refused: 0, ranForward: 0, forwardRefused: 0 };
  const messages = new Map();
  let memAfterWarmup = 0;
  for (let i = 0; i < N; i++) {
    const { kind, bytes } = mutate(r);
    const what = `mutant ${i} (kind ${kind}, ${bytes.length} bytes)`;
    let m = null;
    try {
      m = own.loadModel(bytes);
    } catch (e) {
      assertCleanError(e, what);
      counts.refused++;
      const key = e.message.replace(/'[^']*'|"[^"]*"|\d+/g, '_').slice(0, 60);
      messages.set(key, (messages.get(key) || 0) + 1);
    }
    if (m) {
      counts.loaded++;
      try {
        // a loaded mutant is a ResNet: forward in both modes, on its own input channels
        const c = m.info.inChannels, shape = [2, 16, 16, c];
        for (const mode of ['eval', 'train']) {
          try {
            const y = m[mode]().forward(new Float32Array(2 * 16 * 16 * c).fill(0.5), shape);
            assert.equal(y.length, 2 * m.info.numClasses, `${what}: logits length`);
            counts.ranForward++;
          } catch (e) { assertCleanError(e, `${what} ${mode} forward`); counts.forwardRefused++; }
        }
        m.saveState();
      } finally { m.dispose(); }
    }
    if (i === 49) memAfterWarmup = own.memoryBytes;
  }
  assert.ok(counts.refused >= N / 3, `only ${counts.refused} of ${N} mutants refused: the mutations are too weak`);
  assert.ok(counts.loaded >= 10, `only ${counts.loaded} of ${N} mutants loaded`);
  assert.ok(own.memoryBytes <= memAfterWarmup + (8 << 20),
    `wasm memory grew from ${memAfterWarmup} to ${own.memoryBytes} bytes over ${N - 50} mutants: a leak on an error path?`);
  assertInstanceUsable(own, `${N} mutants`);
  console.log(`# hardening: ${N} mutated weight files: ${counts.loaded} loaded (${counts.ranForward} forwards ran, ` +
    `${counts.forwardRefused} refused), ${counts.refused} refused with ${messages.size} distinct messages, 0 wasm traps`);
});

// ---- weight files of the wrong shape or dtype (model.test.mjs has the common cases) ------------

const f32 = (shape, v = 0) => ({ dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v) });
function edited(edit) {
  const t = { ...weights };
  edit(t);
  return writeSafetensors(t);
}

// Each message names the tensor and says what is wrong with it (the C loader's own checks: the
// safetensors parser, then the layout reader).
const ODD_FILES = [
  ['fc.weight 1-D', (t) => { t['fc.weight'] = f32([7 * 64]); }, /tensor 'fc\.weight' must be 2-D \[classes, features\]/],
  // (the message says "2-D" for a 2-D weight of zero classes: names the layout it wants, not the count)
  ['fc.weight with zero classes', (t) => { t['fc.weight'] = f32([0, 64]); t['fc.bias'] = f32([0]); }, /tensor 'fc\.weight' .*\[classes, features\]/],
  ['fc.weight with the wrong feature count', (t) => { t['fc.weight'] = f32([7, 63]); }, /tensor 'fc\.weight' has shape \[7,63\], expected \[7,36\]/],
  ['conv1 with zero output channels', (t) => { t['conv1.weight'] = f32([0, 3, 7, 7]); }, /tensor 'conv1\.weight' has an implausible dimension 0/],
  ['conv1 with zero input channels', (t) => { t['conv1.weight'] = f32([8, 0, 7, 7]); }, /tensor 'conv1\.weight' has an implausible dimension 0/],
  ['conv1 with a 3x3 kernel', (t) => { t['conv1.weight'] = f32([8, 3, 3, 3]); }, /tensor 'conv1\.weight' has a 3x3 kernel, expected the 7x7/],
  ['conv1 5-D', (t) => { t['conv1.weight'] = f32([8, 3, 7, 7, 1]); }, /tensor 'conv1\.weight' has shape \[8,3,7,7,1\], expected a 4-D/],
  // 8*8*3*2^40 floats: the parser's element count overflows before any layout check
  ['a conv weight whose element count overflows', (t) => { t['layer1.0.conv1.weight'] = { dtype: 'F32', shape: [8, 8, 3, 2 ** 40], data: new Float32Array(0) }; },
    /tensor 'layer1\.0\.conv1\.weight': shape too large \(element count overflows\)/],
  // a well-formed file (a zero dimension: no bytes) whose 70000 passes the parser and reaches the
  // layout reader's limit (1..65536 per dimension)
  ['a conv weight with an implausible dimension', (t) => { t['layer1.0.conv1.weight'] = { dtype: 'F32', shape: [8, 8, 70000, 0], data: new Float32Array(0) }; },
    /tensor 'layer1\.0\.conv1\.weight' has an implausible dimension 70000/],
  ['num_batches_tracked as F32', (t) => { t['bn1.num_batches_tracked'] = f32([]); }, /tensor 'bn1\.num_batches_tracked' has dtype F32, expected an integer type/],
  ['num_batches_tracked of shape [2]', (t) => { t['bn1.num_batches_tracked'] = { dtype: 'I64', shape: [2], data: new BigInt64Array(2) }; },
    /tensor 'bn1\.num_batches_tracked' must hold one integer/],
  ['a BN weight stored as I32', (t) => { t['bn1.weight'] = { dtype: 'I32', shape: [8], data: new Int32Array(8) }; }, /tensor 'bn1\.weight' has dtype I32, expected a float type/],
  ['a BN weight stored as U8', (t) => { t['layer1.0.bn2.bias'] = { dtype: 'U8', shape: [8], data: new Uint8Array(8) }; }, /tensor 'layer1\.0\.bn2\.bias' has dtype U8, expected a float type/],
  ['a negative running variance', (t) => { t['layer2.0.bn1.running_var'] = f32(weights['layer2.0.bn1.running_var'].shape, -1); },
    /tensor 'layer2\.0\.bn1\.running_var' has a negative or non-finite value/],
  ['a NaN running variance', (t) => { t['bn1.running_var'] = f32(weights['bn1.running_var'].shape, NaN); }, /tensor 'bn1\.running_var' has a negative or non-finite value/],
  ['a stage-2 block without its downsample', (t) => { for (const k of Object.keys(t)) if (k.startsWith('layer2.0.downsample')) delete t[k]; },
    /missing tensor 'layer2\.0\.downsample\.0\.weight'/],
  ['a gap in the blocks (layer1.1 missing, layer1.2 present)', (t) => {
    for (const k of Object.keys(t)) if (k.startsWith('layer1.1.')) { t[k.replace('layer1.1.', 'layer1.2.')] = t[k]; delete t[k]; }
  }, /unexpected tensor 'layer1\.2\.conv1\.weight'/],
  // the reader stops at the gap: a two-stage net, whose fc then has the wrong feature count
  ['a gap in the stages (layer3 missing)', (t) => { for (const k of Object.keys(t)) if (k.startsWith('layer3.')) delete t[k]; },
    /tensor 'fc\.weight' has shape \[7,36\], expected \[7,12\]/],
  ['a tensor name that is not UTF-8 safe', (t) => { t['layer1.0.conv1.weight\u0000x'] = f32([1]); }, /bad JSON header at byte \d+: \\u0000 in a string is not supported/],
];

for (const [what, edit, re] of ODD_FILES) {
  test(`loadModel refuses ${what} with a clear Error`, () => {
    assert.throws(() => lab.loadModel(edited(edit)), (e) => { assertCleanError(e, what); return re.test(e.message); });
  });
}

test('weights with NaN and Inf load (the file is well formed) and give non-finite logits, not a trap', () => {
  const m = lab.loadModel(edited((t) => { t['fc.weight'] = { ...t['fc.weight'], data: t['fc.weight'].data.map((v, i) => (i % 3 ? v : i % 2 ? Infinity : NaN)) }; }));
  try {
    const y = m.forward(X, SHAPE);
    assert.equal(y.length, 2 * 7);
    assert.ok(y.some((v) => !Number.isFinite(v)));
    assert.throws(() => m.step(X, SHAPE, LABELS, { lr: 0.1 }), (e) => { assertCleanError(e, 'step'); return /loss|finite|nan/i.test(e.message); });
  } finally { m.dispose(); }
  assertInstanceUsable(lab, 'non-finite weights');
});

// ---- input shapes and batch sizes ------------------------------------------------------------------

test('odd input shapes: a clear Error or finite logits, never a trap', () => {
  const m = lab.loadModel(weightsBytes);
  try {
    const bad = [
      [1, 16, 16, -3], [-1, 16, 16, 3], [1, NaN, 16, 3], [1, 16, Infinity, 3], [2 ** 31, 1, 1, 3], [1, 2 ** 31, 1, 3],
      [0, 16, 16, 3], [1, 16, 16, 0], ['1', 16, 16, 3], [1, 16, 16, 3, 1], [], null, undefined, '1,16,16,3',
      { 0: 1, 1: 16, 2: 16, 3: 3, length: 4 },
    ];
    for (const shape of bad) {
      const n = Array.isArray(shape) && shape.length === 4 ? 16 * 16 * 3 : 3;
      // the message names the call, says what is wrong and shows the shape it was given
      assert.throws(() => m.forward(new Float32Array(n), shape), (e) => {
        assertCleanError(e, `shape ${String(shape)}`);
        return /^bnlab: forward: /.test(e.message) && e.message.includes(showShapeForTest(shape)) &&
          (/shape must be \[n, h, w, c\] of positive integers \(got /.test(e.message) || /is too large$/.test(e.message));
      }, `shape ${String(shape)} accepted`);
    }
    // a BigInt dimension is refused by the same check, the shape shown as String() shows it
    // (JSON.stringify throws on BigInt)
    assert.throws(() => m.forward(new Float32Array(16 * 16 * 3), [1n, 16, 16, 3]), (e) => {
      assertCleanError(e, 'BigInt shape');
      return e.message === 'bnlab: forward: shape must be [n, h, w, c] of positive integers (got 1,16,16,3)';
    });
    // every small spatial size runs in eval mode (padding keeps at least one pixel everywhere)
    for (let h = 1; h <= 9; h++)
      for (const w of [1, 2, 5, 9]) {
        const y = m.eval().forward(new Float32Array(2 * h * w * 3).fill(0.25), [2, h, w, 3]);
        assert.ok(y.length === 14 && y.every(Number.isFinite), `${h}x${w}: logits`);
      }
    // train mode at one image of 16x16: the deepest BatchNorm sees one value per channel. (The
    // layers before it have updated their running statistics by then, as in PyTorch: a model of
    // its own, so that the fixture check below stays exact.)
    const m2 = lab.loadModel(weightsBytes);
    try {
      assert.throws(() => m2.train().forward(new Float32Array(16 * 16 * 3), [1, 16, 16, 3]),
        (e) => { assertCleanError(e, 'N=1 train'); return /more than 1 value per channel/.test(e.message); });
      assert.ok(m2.eval().forward(X, SHAPE).every(Number.isFinite), 'the model still runs');
    } finally { m2.dispose(); }
    const want = exp.logits_eval.data;
    assertClose(m.forward(X, SHAPE), want, { atol: 1e-4 * maxAbs(want), rtol: 1e-4, what: 'logits after odd shapes' });
  } finally { m.dispose(); }
});

test('absurd batch sizes throw clear Errors; a big batch of tiny images runs', () => {
  const m = lab.loadModel(weightsBytes);
  try {
    // beyond the bridge's limits (n <= 65536, h, w <= 8192, n*h*w*c < 2^30): refused before any allocation
    for (const shape of [[65537, 1, 1, 3], [2 ** 20, 1, 1, 3], [1e9, 1, 1, 3], [65536, 8192, 8192, 3]])
      assert.throws(() => m.forward(new Float32Array(3), shape),
        (e) => { assertCleanError(e, `batch ${shape}`); return e.message === `bnlab: forward: shape ${JSON.stringify(shape)} is too large`; });
    // within them, but not matching the data given: the length check names both counts
    for (const shape of [[65536, 64, 64, 3], [4096, 8192, 1, 3]])
      assert.throws(() => m.forward(new Float32Array(3), shape),
        (e) => { assertCleanError(e, `batch ${shape}`); return e.message === `bnlab: input has 3 values, expected ${shape.reduce((a, b) => a * b)}`; });
    assert.throws(() => m.step(new Float32Array(3), [65537, 1, 1, 3], new Array(65537).fill(0), { lr: 0.1 }),
      (e) => { assertCleanError(e, 'step batch 65537'); return /too large/.test(e.message); });
    // 65536 images of 1x1: legal, small (one value per image and channel)
    const y = m.forward(new Float32Array(65536 * 3).fill(0.1), [65536, 1, 1, 3]);
    assert.equal(y.length, 65536 * 7);
    assert.ok(y.every(Number.isFinite));
    for (const [M, C] of [[0, 4], [4, 0], [-2, 4], [2.5, 4], [NaN, 4], [2 ** 30, 2]]) {
      assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(8), M, C),
        (e) => { assertCleanError(e, `batchnorm ${M}x${C}`); return e.message.includes(`(got M=${M}, C=${C})`) && /M\*C < 2\^30/.test(e.message); });
    }
    // one row per channel reaches the C core, which refuses it as PyTorch does
    assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(4), 1, 4),
      (e) => { assertCleanError(e, 'batchnorm 1x4'); return /more than 1 value per channel/.test(e.message); });
    assert.throws(() => lab.batchNorm.forwardTrain(new Float32Array(8), 4, 2, { gamma: new Float32Array(3) }),
      (e) => { assertCleanError(e, 'gamma length'); return /gamma/.test(e.message); });
    const want = exp.logits_eval.data;
    assertClose(m.forward(X, SHAPE), want, { atol: 1e-4 * maxAbs(want), rtol: 1e-4, what: 'logits after absurd batches' });
  } finally { m.dispose(); }
});

// The bridge refuses absurd sizes in JS before calling the module (above); the C core has the same
// limits of its own, for callers that are not web/bnlab.mjs. Reached here through the raw exports.
test('absurd sizes reach the C core\'s own limits past the JS checks: clear Errors naming the sizes', () => {
  const ex = lab._ex;
  const m = lab.loadModel(weightsBytes);
  try {
    // bnl_resnet_forward: N <= 65536, H, W <= 8192 (the JS checkShape mirrors them)
    for (const [n, h, w] of [[65537, 1, 1], [1, 8193, 1], [1, 1, 8193], [0, 16, 16], [1, -1, 16]])
      assert.throws(() => lab._scoped((alloc) => {
        const px = alloc(16 * 16 * 3 * 4), pl = alloc(7 * 4);
        lab._check(ex.bnl_wasm_model_forward(m._h, pl, px, n, h, w, 3));
      }), (e) => { assertCleanError(e, `C forward ${n}x${h}x${w}`); return e.message === `bnlab: forward: bad input shape [${n},${h},${w},3]`; });
    // BatchNorm: M*C floats must fit the 32-bit size_t (the JS checkSizes allows < 2^30)
    for (const [M, C] of [[2 ** 30, 4], [1 << 20, 1 << 20], [0x7fffffff, 3]])
      assert.throws(() => lab._scoped((alloc) => {
        const p = alloc(64);
        lab._check(ex.bnl_wasm_bn_forward_train(p, p, p, p, p, p, 0, p, p, p, M, C, 1e-5, 0.9, 0));
      }), (e) => { assertCleanError(e, `C batchnorm ${M}x${C}`); return e.message === `bnlab: batchnorm train forward: tensor size M*C = ${M}*${C} overflows`; });
    const want = exp.logits_eval.data;
    assertClose(m.forward(X, SHAPE), want, { atol: 1e-4 * maxAbs(want), rtol: 1e-4, what: 'logits after the C-side refusals' });
  } finally { m.dispose(); }
  assertInstanceUsable(lab, 'C-side size limits');
});

test('procedural datasets: absurd options and batches throw clear Errors', () => {
  for (const o of [{ size: 100000 }, { size: 4 }, { classes: 1 }, { classes: 17 }, { count: 0 }, { count: -5 }, { seed: -1 }, { size: 1.5 }])
    assert.throws(() => lab.procedural(o), (e) => {
      assertCleanError(e, JSON.stringify(o));
      const [k, v] = Object.entries(o)[0];
      return e.message.includes(k) && e.message.includes(String(v));   // names the option and its value
    }, JSON.stringify(o));
  const d = lab.procedural({ seed: 3, count: 100, classes: 4, size: 512 });
  try {
    // 1365 images of 512x512x3 floats = 0xfff00000 bytes: passes the bridge's 4 GiB check, but no
    // wasm heap that already holds anything can grow that much: malloc fails inside the module
    assert.throws(() => d.batch(0, 1365), (e) => { assertCleanError(e, 'batch of 1365'); return /out of memory/.test(e.message); });
    assert.throws(() => d.batch(0, 70000), (e) => { assertCleanError(e, 'batch of 70000'); return /n = 70000/.test(e.message); });
    assert.throws(() => d.batchIndices([0, 100]), (e) => { assertCleanError(e, 'index 100'); return /index 1 is 100/.test(e.message); });
    assert.throws(() => d.image(100), (e) => { assertCleanError(e, 'image 100'); return /100/.test(e.message); });
    assert.equal(d.batch(98, 4).labels.length, 4, 'a batch that wraps around still works');
  } finally { d.dispose(); }
  assertInstanceUsable(lab, 'dataset errors');
});

test('CIFAR-10 bytes (the C bridge, as the page will call it): malformed buffers are refused cleanly', (t) => {
  const ex = lab._ex;
  if (typeof ex.bnl_wasm_dataset_cifar10 !== 'function') { t.skip('no CIFAR-10 bridge in this build'); return; }
  const load = (bytes) => lab._scoped((alloc) => {
    const pb = alloc(Math.max(1, bytes.length)), pout = alloc(4);
    new Uint8Array(ex.memory.buffer, pb, bytes.length).set(bytes);
    lab._check(ex.bnl_wasm_dataset_cifar10(pb, bytes.length, pout));
    return new Uint32Array(ex.memory.buffer, pout, 1)[0];
  });
  const rec = new Uint8Array(3073).map((_, i) => i * 7);
  rec[0] = 4;
  const r = rng(7);
  let refused = 0, loaded = 0;
  for (let i = 0; i < 60; i++) {
    let b;
    if (i % 3 === 0) b = rec.subarray(0, Math.floor(r() * 3073));                       // truncated
    else if (i % 3 === 1) { b = Uint8Array.from([...rec, ...rec]); b[3073 * Math.floor(r() * 2)] = 10 + Math.floor(r() * 246); }   // bad label
    else { b = Uint8Array.from([...rec, ...rec]); b[Math.floor(r() * b.length)] = Math.floor(r() * 10); }   // a pixel or label change: fine
    try {
      const h = load(b);
      loaded++;
      assert.equal(ex.bnl_wasm_dataset_size(h), 2);
      ex.bnl_wasm_dataset_free(h);
    } catch (e) { assertCleanError(e, `cifar case ${i}`); refused++; }
  }
  assert.ok(refused >= 40 && loaded >= 15, `${refused} refused, ${loaded} loaded`);
});

// ---- real out-of-memory inside the C core -----------------------------------------------------------

// Fills the wasm heap of `own` up to its 4 GiB limit, leaving about `spare` bytes free (one block
// allocated first and freed last). Returns the blocks to free afterwards and how many bytes they hold.
function fillHeap(own, spare) {
  const ex = own._ex, blocks = [];
  const reserve = spare ? ex.bnl_wasm_malloc(spare) : 0;
  let held = 0;
  for (let size = 1 << 28; size >= 16; size >>= 1)
    for (let p; (p = ex.bnl_wasm_malloc(size));) blocks.push(p), held += size;
  if (reserve) ex.bnl_wasm_free(reserve);
  return { blocks, held, release() { for (const p of blocks) ex.bnl_wasm_free(p); } };
}

test('out of memory inside the C core (heap filled to 4 GiB): loads, forwards and steps fail cleanly, nothing leaks', async () => {
  const own = await createBnLab();   // its own instance: its memory grows to the 4 GiB limit
  const first = fillHeap(own, 0);
  first.release();
  const capacity = first.held;   // what the heap can hand out when nothing else is allocated
  const m = own.loadModel(weightsBytes), ms = own.loadModel(weightsBytes);   // m: eval only; ms: steps
  let outcomes = { loadOk: 0, loadOom: 0, forwardOk: 0, forwardOom: 0, stepOk: 0, stepOom: 0 };
  const oom = /out of memory|cannot allocate/;
  try {
    // free budgets from 16 KB to 16 MB: each call fails at some allocation of its own, or not at all
    for (let spare = 1 << 14; spare <= 1 << 24; spare = Math.ceil(spare * 1.5)) {
      const heap = fillHeap(own, spare);
      try {
        try {
          own.loadModel(weightsBytes).dispose();
          outcomes.loadOk++;
        } catch (e) { assertCleanError(e, `load with ${spare} bytes free`); assert.match(e.message, oom); outcomes.loadOom++; }
        try {
          m.eval().forward(X, SHAPE);
          outcomes.forwardOk++;
        } catch (e) { assertCleanError(e, `forward with ${spare} bytes free`); assert.match(e.message, oom); outcomes.forwardOom++; }
        try {
          ms.step(X, SHAPE, LABELS, { lr: 0.01 });
          outcomes.stepOk++;
        } catch (e) { assertCleanError(e, `step with ${spare} bytes free`); assert.match(e.message, oom); outcomes.stepOom++; }
      } finally { heap.release(); }
    }
    m.eval();
    const want = exp.logits_eval.data;
    assertClose(m.forward(X, SHAPE), want, { atol: 1e-4 * maxAbs(want), rtol: 1e-3, what: 'the same model after the out-of-memory errors' });
  } finally { m.dispose(); ms.dispose(); }
  assert.ok(outcomes.loadOom > 0 && outcomes.loadOk > 0, `loads: ${JSON.stringify(outcomes)}`);
  assert.ok(outcomes.forwardOom > 0 && outcomes.stepOom > 0, `forwards and steps: ${JSON.stringify(outcomes)}`);
  // every failed call released what it had allocated: the heap hands out as much as before
  const again = fillHeap(own, 0);
  again.release();
  assert.ok(again.held >= capacity - (1 << 20), `the heap holds ${capacity - again.held} bytes less after the failures: a leak`);
  assertInstanceUsable(own, 'out of memory');
  console.log(`# hardening: out of memory at ${outcomes.loadOom + outcomes.forwardOom + outcomes.stepOom} places ` +
    `(loads ${outcomes.loadOom}, forwards ${outcomes.forwardOom}, steps ${outcomes.stepOom}), 0 traps, 0 bytes leaked`);
});
