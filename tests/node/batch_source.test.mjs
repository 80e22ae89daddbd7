// web/batch_source.mjs: the page's batches follow what the model was trained on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchSourceFor } from '../../web/batch_source.mjs';

const info = (trainData, size = [3, 64, 64]) => ({ trainData, inputSize: size });

test('procedural -> shapes; ImageNet and unknown -> photos; Fashion-MNIST -> its test images (square sizes)', () => {
  assert.deepEqual(batchSourceFor(info('procedural')), { kind: 'procedural', data: 'procedural', note: null });
  assert.deepEqual(batchSourceFor(info('imagenet', [3, 224, 224])), { kind: 'photos', data: 'imagenet', note: null });
  const unknown = batchSourceFor(info(null));
  assert.equal(unknown.kind, 'photos');
  assert.match(unknown.note, /does not say/);
  for (const d of ['fashion-mnist', 'fashion-mnist:/usr/share/datasets/fashion-mnist']) {
    assert.deepEqual(batchSourceFor(info(d, [3, 28, 28])), { kind: 'fashion-mnist', data: d, note: null });
    assert.equal(batchSourceFor(info(d, [3, 56, 56])).kind, 'fashion-mnist');
    const r = batchSourceFor(info(d, [3, 28, 32]));
    assert.equal(r.kind, 'photos');
    assert.match(r.note, /Fashion-MNIST, but at 28×32/);
  }
  assert.equal(batchSourceFor(info('fashion-mnistx', [3, 28, 28])).kind, 'photos');
  assert.match(batchSourceFor(info('cifar10:/data')).note, /cifar10/);
  // the shape generator draws squares only
  const rect = batchSourceFor(info('procedural', [3, 64, 48]));
  assert.equal(rect.kind, 'photos');
  assert.match(rect.note, /64×48/);
});
