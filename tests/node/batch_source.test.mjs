// web/batch_source.mjs: the page's batches follow what the model was trained on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchSourceFor } from '../../web/batch_source.mjs';

const info = (trainData, size = [3, 64, 64]) => ({ trainData, inputSize: size });

test('procedural -> shapes; ImageNet and unknown -> photos; Fashion-MNIST -> photos for now, said', () => {
  assert.deepEqual(batchSourceFor(info('procedural')), { kind: 'procedural', data: 'procedural', note: null });
  assert.deepEqual(batchSourceFor(info('imagenet', [3, 224, 224])), { kind: 'photos', data: 'imagenet', note: null });
  const unknown = batchSourceFor(info(null));
  assert.equal(unknown.kind, 'photos');
  assert.match(unknown.note, /does not say/);
  for (const d of ['fashion-mnist', 'fashion-mnist:/usr/share/datasets/fashion-mnist']) {
    const s = batchSourceFor(info(d, [3, 28, 28]));
    assert.equal(s.kind, 'photos');
    assert.match(s.note, /Fashion-MNIST/);
  }
  assert.match(batchSourceFor(info('cifar10:/data')).note, /cifar10/);
  // the shape generator draws squares only
  const rect = batchSourceFor(info('procedural', [3, 64, 48]));
  assert.equal(rect.kind, 'photos');
  assert.match(rect.note, /64×48/);
});
