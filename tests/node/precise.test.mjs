// model.setRunningStats and model.preciseBN (the C PreciseBN through the bridge). PreciseBN over
// batches of 3, 5 and 4 images (means shifted apart) must equal a direct float64 computation from
// each batch's own statistics (a copy's forwardTo): size-weighted mean of the batch means, and the
// pooled variance = weighted mean of (batch variance + squared deviation of the batch mean). The
// accumulation must not move running statistics or the mode; bad calls are Errors and the
// instance stays usable. Norm kinds without running statistics ('none', 'group') refuse both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createBnLab } from '../../web/bnlab.mjs';
import { H, ROOT, SIZES, W, WEIGHTS, batches } from './precise_batches.mjs';

const lab = await createBnLab();

test('preciseBN equals the pooled statistics of all batches; accumulation moves nothing until the end', () => {
  const m = lab.loadModel(WEIGHTS), ref = lab.loadModel(WEIGHTS).train();
  const names = m.info.bnLayers, L = names.length, NT = SIZES.reduce((a, b) => a + b);
  const per = batches.map((b) => { ref.forwardTo(b.x, b.shape, L - 1); return names.map((n) => ref.bnStats(n)); });
  const before = names.map((n) => m.bnStats(n));
  const acc = m.preciseBNBegin();
  acc.add(batches[0].x, batches[0].shape);
  acc.add(batches[1].x, batches[1].shape);
  assert.equal(acc.batches, 2);
  assert.equal(m.training, false);
  for (let i = 0; i < L; i += 7) {
    assert.deepEqual(m.bnStats(i).runningVar, before[i].runningVar, `${names[i]} moved during the accumulation`);
    assert.equal(m.bnStats(i).numBatchesTracked, before[i].numBatchesTracked);
  }
  assert.throws(() => acc.add(new Float32Array(4 * H * (W + 8) * 3), [4, H, W + 8, 3]), /earlier batches/);   // another image size
  acc.add(batches[2].x, batches[2].shape);   // still usable
  acc.end();
  assert.throws(() => acc.add(batches[0].x, batches[0].shape), /ended/);
  let worst = 0;
  for (let i = 0; i < L; i++) {
    const got = m.bnStats(i), C = got.channels;
    for (let c = 0; c < C; c++) {
      let mu = 0, v = 0;
      SIZES.forEach((n, b) => { mu += (n * per[b][i].batchMean[c]) / NT; });
      SIZES.forEach((n, b) => { const d = per[b][i].batchMean[c] - mu; v += (n * (per[b][i].batchVar[c] + d * d)) / NT; });
      const em = Math.abs(got.runningMean[c] - mu), ev = Math.abs(got.runningVar[c] - v) / Math.max(v, 1e-6);
      worst = Math.max(worst, ev);
      assert.ok(em <= 1e-6 + 1e-5 * Math.abs(mu), `${names[i]}[${c}] mean ${got.runningMean[c]} want ${mu}`);
      assert.ok(ev <= 1e-5, `${names[i]}[${c}] var ${got.runningVar[c]} want ${v}`);
    }
  }
  // the all-at-once form gives the same bits
  const m2 = lab.loadModel(WEIGHTS);
  m2.preciseBN(batches);
  for (let i = 0; i < L; i++) assert.deepEqual(m2.bnStats(i).runningVar, m.bnStats(i).runningVar);
  // and the eval forward reads them: equal logits after copying them into a third model
  const m3 = lab.loadModel(WEIGHTS);
  for (let i = 0; i < L; i++) {
    const s = m.bnStats(i);
    m3.setRunningStats(names[i], { mean: s.runningMean, variance: s.runningVar });
  }
  assert.deepEqual(m3.eval().forward(batches[0].x, batches[0].shape), m.eval().forward(batches[0].x, batches[0].shape));
  [m, ref, m2, m3].forEach((x) => x.dispose());
});

test('setRunningStats: read back, reaches the eval forward; bad calls are Errors that change nothing', () => {
  const m = lab.loadModel(WEIGHTS).eval();
  const y0 = m.forward(batches[0].x, batches[0].shape);
  const C = m.bnStats(3).channels;
  const mean = new Float32Array(C).map((_, c) => 0.01 * c), variance = new Float32Array(C).fill(2);
  const keep = m.bnStats(3);
  const bad = [
    [() => m.setRunningStats(3, { mean: mean.subarray(1), variance }), /values, expected/],
    [() => m.setRunningStats(3, { mean }), /mean, variance/],
    [() => m.setRunningStats('nope', { mean, variance }), /no BatchNorm layer/],
    [() => m.setRunningStats(3, { mean, variance: variance.map((v, c) => (c === 2 ? -1 : v)) }), /variance\[2\]/],
    [() => m.setRunningStats(3, { mean: mean.map((v, c) => (c === 1 ? NaN : v)), variance }), /mean\[1\] is not finite/],
    [() => m.preciseBN([]), /no batches/],
    [() => m.preciseBN(5), /array of/],
    [() => m.preciseBN([{ x: new Float32Array(3 * H * W * 4), shape: [3, H, W, 4] }]), /channels/],
  ];
  for (const [f, re] of bad) assert.throws(f, re);
  assert.deepEqual(m.bnStats(3).runningMean, keep.runningMean);
  assert.deepEqual(m.forward(batches[0].x, batches[0].shape), y0, 'a refused call changed the model');
  m.setRunningStats(3, { mean, variance });
  assert.deepEqual(m.bnStats(3).runningMean, mean);
  assert.deepEqual(m.bnStats(3).runningVar, variance);
  assert.notDeepEqual(m.forward(batches[0].x, batches[0].shape), y0, 'the eval forward did not see the new statistics');
  m.dispose();
});

test("norm kinds without running statistics ('none', 'group') refuse both with a clear Error", () => {
  for (const kind of ['none', 'group']) {
    const m = lab.loadModel(new Uint8Array(readFileSync(`${ROOT}demo-models/norms/${kind}.safetensors`)));
    assert.equal(m.info.norm.split(':')[0], kind);
    const C = m.bnStats(0).channels;
    assert.throws(() => m.setRunningStats(0, { mean: new Float32Array(C), variance: new Float32Array(C) }),
      /no running statistics/);
    assert.throws(() => m.preciseBNBegin(), new RegExp(`\\(${kind}\\) has no running statistics`));
    m.dispose();
  }
});
