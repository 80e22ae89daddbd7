// web/precise_layer.mjs: PreciseBN of one layer from forwards that stop at that layer (model.forwardTo).
// It must give bitwise the running statistics the C PreciseBN (model.preciseBN, every layer, full
// forwards) gives that layer, over batches of different sizes; bad calls are Errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBnLab } from '../../web/bnlab.mjs';
import { SIZES, WEIGHTS, batches } from './precise_batches.mjs';
import { preciseLayerBegin } from '../../web/precise_layer.mjs';

const same = (a, b) => a.length === b.length && a.every((v, k) => Object.is(v, b[k]));

test('one layer\'s PreciseBN from forwards up to it equals the C PreciseBN of the whole network, bitwise', async () => {
  const lab = await createBnLab({ threads: 1 });
  const full = lab.loadModel(WEIGHTS);
  full.preciseBN(batches);
  const names = full.info.bnLayers;
  for (const li of [0, 4, names.indexOf('layer2.0.downsample.1'), names.length - 1]) {
    const copy = lab.loadModel(WEIGHTS).train();
    const C = copy.bnStats(li).channels;
    const acc = preciseLayerBegin(C);
    for (const b of batches) acc.add(copy.forwardTo(b.x, b.shape, li), b.shape[0]);
    assert.equal(acc.batches, SIZES.length);
    const got = acc.end(), want = full.bnStats(li);
    assert.ok(same(got.mean, want.runningMean), `${names[li]}: mean differs from the C PreciseBN (first ${got.mean[0]} vs ${want.runningMean[0]})`);
    assert.ok(same(got.variance, want.runningVar), `${names[li]}: variance differs from the C PreciseBN (first ${got.variance[0]} vs ${want.runningVar[0]})`);
    copy.dispose();
  }
  full.dispose();
});

test('preciseLayerBegin: bad calls are Errors', () => {
  assert.throws(() => preciseLayerBegin(0), /channels/);
  const acc = preciseLayerBegin(2);
  assert.throws(() => acc.end(), /no batches/);
  assert.throws(() => acc.add({ batchMean: new Float32Array(3), batchVar: new Float32Array(3) }, 4), /2 channels/);
  assert.throws(() => acc.add({ batchMean: null, batchVar: null }, 4), /2 channels/);
  assert.throws(() => acc.add({ batchMean: new Float32Array(2), batchVar: new Float32Array(2) }, 0), /batch size/);
});
