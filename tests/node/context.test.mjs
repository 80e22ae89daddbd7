// A second context over one model's state (model.cloneContext(), bnl_resnet_clone_context): what
// the page's worker uses for train-mode forwards instead of a second copy of the model. The
// weights are shared (not copied), train-mode forwards on the clone leave the shared running
// statistics bitwise as they were, and updates through either handle are seen by the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors } from './safetensors.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = join(ROOT, 'tests/fixtures/resnet');
const lab = await createBnLab();
const heap = () => lab._ex.bnl_wasm_heap_in_use();

const bytes = new Uint8Array(readFileSync(join(FIX, 'resnet50.weights.safetensors')));
const inp = readSafetensors(join(FIX, 'resnet50.input.safetensors')).tensors;
const x = inp.input.data, shape = inp.input.shape, labels = Array.from(inp.labels.data, Number);

// Every layer's running statistics and num_batches_tracked, copied out.
function running(m) {
  return m.info.bnLayers.map((_, i) => {
    const s = m.bnStats(i);
    return { mean: Float32Array.from(s.runningMean), var: Float32Array.from(s.runningVar), n: s.numBatchesTracked };
  });
}
function assertBitwise(a, b, what) {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) assert.ok(ua[i] === ub[i], `${what}: [${i}] ${a[i]} vs ${b[i]}`);
}
function assertRunningSame(a, b, what) {
  a.forEach((l, i) => {
    assertBitwise(l.mean, b[i].mean, `${what}: layer ${i} running mean`);
    assertBitwise(l.var, b[i].var, `${what}: layer ${i} running var`);
    assert.equal(l.n, b[i].n, `${what}: layer ${i} num_batches_tracked`);
  });
}

test('a second context costs a small fraction of a second model (weights are not copied)', () => {
  const main = lab.loadModel(bytes);
  const h0 = heap();
  const clone = main.cloneContext();
  const cloneBytes = heap() - h0;
  const h1 = heap();
  const second = lab.loadModel(bytes);
  const modelBytes = heap() - h1;
  const paramBytes = 4 * main.info.numParams;
  assert.ok(modelBytes >= paramBytes, `a second model takes ${modelBytes} bytes, its parameters alone ${paramBytes}`);
  // what a clone holds is per channel (batch statistics, a private copy of the running ones) and per
  // layer, never per weight: far below the parameters (this fixture is narrow, so channels weigh more
  // than in a full-width model, where the ratio is about 1/200)
  assert.ok(cloneBytes < paramBytes / 4 && cloneBytes < modelBytes / 8,
    `the clone took ${cloneBytes} bytes, a second model ${modelBytes}, the parameters ${paramBytes}`);
  assert.deepEqual(clone.info.bnLayers, main.info.bnLayers);
  assert.equal(clone.training, false, 'a clone starts in eval mode');
  second.dispose(), clone.dispose(), main.dispose();
});

test('train-mode forwards on the clone leave the running statistics bitwise unchanged; batch statistics as a fresh model', () => {
  const main = lab.loadModel(bytes), fresh = lab.loadModel(bytes);
  const clone = main.cloneContext();
  const before = running(main);
  clone.train();
  const lt = clone.forward(x, shape);
  clone.forward(x, shape);   // twice: a private copy that drifted would now differ from `fresh`
  const st = clone.forwardTo(x, shape, 3);
  clone.bnInput(x, shape, 5, 0);
  const lt2 = clone.forward(x, shape);
  assertRunningSame(running(main), before, 'main after clone train forwards');
  assertRunningSame(running(clone), before, 'the clone\'s view of the running statistics');
  // the same train-mode forward on an untouched copy: same logits and batch statistics, bit for bit
  const lf = fresh.train().forward(x, shape);
  assertBitwise(lt, lf, 'train logits, clone vs fresh model');
  assertBitwise(lt2, lf, 'train logits, clone (4th forward) vs fresh model');
  for (let i = 0; i < main.info.bnLayers.length; i++) {
    assertBitwise(clone.bnStats(i).batchMean, fresh.bnStats(i).batchMean, `layer ${i} batch mean`);
    assertBitwise(clone.bnStats(i).batchVar, fresh.bnStats(i).batchVar, `layer ${i} batch var`);
  }
  assert.equal(st.channels, main.bnStats(3).channels);
  // the fresh model's own train forward did move its running statistics (the test can see a move)
  assert.notDeepEqual(Array.from(fresh.bnStats(0).runningMean), Array.from(before[0].mean));
  // eval on both contexts: the same running statistics, the same logits
  assertBitwise(clone.eval().forward(x, shape), main.eval().forward(x, shape), 'eval logits clone vs main');
  clone.dispose(), fresh.dispose(), main.dispose();
});

test('updates through one context are seen by the other (shared memory, stale caches rebuilt)', () => {
  const main = lab.loadModel(bytes);
  const clone = main.cloneContext();
  const e0 = clone.eval().forward(x, shape);   // builds the clone's packed eval weights
  main.step(x, shape, labels, { lr: 0.05 });    // moves weights and running statistics of the state
  const after = running(main);
  assertRunningSame(running(clone), after, 'clone sees main\'s new running statistics');
  const em = main.eval().forward(x, shape), ec = clone.forward(x, shape);
  assertBitwise(ec, em, 'eval logits after a step on main: clone vs main');
  assert.ok(em.some((v, i) => v !== e0[i]), 'the step changed the eval logits');
  // and the other way: a step on the clone moves main's weights (not its running statistics)
  const run = running(main);
  clone.step(x, shape, labels, { lr: 0.05 });
  assertRunningSame(running(main), run, 'a clone step leaves the running statistics');
  assertBitwise(main.eval().forward(x, shape), clone.eval().forward(x, shape), 'eval logits after a clone step');
  assert.ok(main.forward(x, shape).some((v, i) => v !== em[i]), 'the clone step changed main\'s weights');
  clone.dispose(), main.dispose();
});

test('train-mode forwards without a backward (Winograd 3x3 weights) follow every weight change, through either context', () => {
  // A forward-only train pass runs its 3x3 stride-1 convolutions through Winograd weights packed
  // per context and parameter version; after a step on either handle both contexts must compute
  // what a fresh model with the new weights computes, bit for bit.
  const main = lab.loadModel(bytes);
  const clone = main.cloneContext();
  const before = clone.train().forward(x, shape);   // builds the clone's Winograd weights
  main.train().forward(x, shape);                   // and main's
  for (const [who, stepper] of [['main', main], ['clone', clone]]) {
    stepper.step(x, shape, labels, { lr: 0.05 });
    const fresh = lab.loadModel(main.saveState());
    const want = fresh.train().forward(x, shape);
    assertBitwise(clone.train().forward(x, shape), want, `clone's train-mode logits after a step on ${who}`);
    assert.ok(want.some((v, i) => v !== before[i]), `the step on ${who} changed the train-mode logits`);
    fresh.dispose();
  }
  clone.dispose(), main.dispose();
});

test('the state outlives the first handle: a clone keeps working after main is disposed; memory comes back', () => {
  const h0 = heap();
  const main = lab.loadModel(bytes);
  const want = main.eval().forward(x, shape);
  const clone = main.cloneContext();
  main.dispose();
  assertBitwise(clone.forward(x, shape), want, 'eval logits after main was disposed');
  assert.ok(clone.saveState().length > 4 * clone.info.numParams, 'the clone saves the whole state');
  clone.dispose();
  assert.throws(() => clone.forward(x, shape), /disposed/);
  assert.equal(heap(), h0, 'every byte came back');
});

// model.stateVersion (bnl_resnet_state_version): moves with every write to the shared weights or
// running statistics, through either handle, and with nothing else; the page's worker reuses the
// probe image's single-image forwards while it stands still.
test('stateVersion moves with every state write (either handle) and only then', () => {
  const m = lab.loadModel(bytes), c = m.cloneContext();
  const v = () => m.stateVersion;
  try {
    let last = v();
    assert.equal(c.stateVersion, last, 'one state, one version');
    const still = (what) => assert.equal(v(), last, `${what} wrote nothing`);
    const moved = (what) => { assert.ok(v() > last, `${what} wrote the state`); assert.equal(c.stateVersion, v()); last = v(); };
    m.eval().forward(x, shape); still('an eval forward');
    c.train().forward(x, shape); still("the clone's train-mode forward (running statistics untouched)");
    c.forwardTo(x, shape, 3); still("the clone's forwardTo");
    c.eval();
    m.bnStats(0); m.saveState(); still('reading statistics and saving');
    m.train().forward(x, shape); moved('a train-mode forward that updates the running statistics');
    m.eval();
    const s0 = m.bnStats(0);
    m.setRunningStats(m.info.bnLayers[0], { mean: s0.runningMean, variance: s0.runningVar }); moved('setRunningStats');
    c.train().step(x, shape, labels, { lr: 0.01 }); moved("a step through the clone");
    c.eval();
    m.preciseBN([{ x, shape }]); moved('PreciseBN');
  } finally {
    c.dispose();
    m.dispose();
  }
});
