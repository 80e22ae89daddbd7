// The model card through web/bnlab.mjs: model.info.inputSize/mean/std/labels/trainData and, for each,
// provenance { from: 'file' | 'assumed', why, problem? }. Read from __metadata__; assumed for a
// 1000-class file without it (ImageNet: 224x224, ImageNet mean/std, torchvision's 1000 names); a
// malformed key is ignored with a `problem` (the weights still load; the page shows the problem).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { IMAGENET_CLASSES } from '../../web/imagenet_classes.mjs';
import { parseSafetensors, writeSafetensors } from './safetensors.mjs';

const fix = (p) => new Uint8Array(readFileSync(fileURLToPath(new URL(`../fixtures/${p}`, import.meta.url))));
const R50 = parseSafetensors(fix('resnet/resnet50.weights.safetensors'));           // 10 classes, has labels
const IN1K = fix('imagenet/resnet50-narrow-1000.safetensors');                       // 1000 classes, no metadata
const IN1K_T = parseSafetensors(IN1K);
const lab = await createBnLab();
const withMeta = (file, meta) => writeSafetensors(file.tensors, meta);
function info(bytes) {
  const m = lab.loadModel(bytes);
  try { return m.info; } finally { m.dispose(); }
}

test('read from __metadata__: every key, provenance "file"', () => {
  const labels = Array.from({ length: 10 }, (_, k) => `name "${k}" \\ é`);   // quotes, backslash, UTF-8 survive
  const i = info(withMeta(R50, {
    input_size: '[3, 96, 80]', mean: '[0.5,0.25,0.125]', std: '[0.2,0.3,0.4]', labels: JSON.stringify(labels),
    'train.data': 'fashion-mnist',
  }));
  assert.deepEqual(i.inputSize, [3, 96, 80]);
  assert.deepEqual(i.mean, [0.5, 0.25, 0.125]);
  assert.deepEqual(i.std, [0.2, 0.3, 0.4]);
  assert.deepEqual(i.labels, labels);
  assert.equal(i.trainData, 'fashion-mnist');
  for (const k of ['inputSize', 'mean', 'std', 'labels', 'trainData']) {
    assert.equal(i.provenance[k].from, 'file', k);
    assert.equal(i.provenance[k].problem, undefined, k);
  }
});

test('a 1000-class model without metadata is ImageNet, and says it assumed so', () => {
  const i = info(IN1K);
  assert.equal(i.numClasses, 1000);
  assert.deepEqual(i.inputSize, [3, 224, 224]);
  assert.deepEqual(i.mean, [0.485, 0.456, 0.406]);
  assert.deepEqual(i.std, [0.229, 0.224, 0.225]);
  assert.equal(i.labels.length, 1000);
  assert.equal(i.labels, IMAGENET_CLASSES);
  assert.deepEqual([i.labels[0], i.labels[1], i.labels[207], i.labels[999]], ['tench', 'goldfish', 'golden retriever', 'toilet tissue']);
  assert.equal(i.trainData, 'imagenet');
  for (const k of ['inputSize', 'mean', 'std', 'labels', 'trainData']) {
    assert.equal(i.provenance[k].from, 'assumed', k);
    assert.match(i.provenance[k].why, /1000 classes/, k);
    assert.equal(i.provenance[k].problem, undefined, k);
  }
  // its own keys win, key by key
  const j = info(withMeta(IN1K_T, { input_size: '[3,160,160]', 'train.data': 'folder:/data/birds' }));
  assert.deepEqual(j.inputSize, [3, 160, 160]);
  assert.equal(j.provenance.inputSize.from, 'file');
  assert.equal(j.trainData, 'folder:/data/birds');
  assert.equal(j.provenance.mean.from, 'assumed');
  assert.equal(j.labels.length, 1000);
});

test('another class count without metadata: no names, 64x64 or the training size, data unknown', () => {
  const i = info(withMeta(R50, null));
  assert.deepEqual(i.inputSize, [3, 64, 64]);
  assert.equal(i.labels, undefined);
  assert.equal(i.trainData, null);
  assert.match(i.provenance.inputSize.why, /not a 1000-class/);
  assert.equal(i.provenance.labels.from, 'assumed');
  const j = info(withMeta(R50, { 'train.image-size': '48x40', 'train.data': 'procedural' }));
  assert.deepEqual(j.inputSize, [3, 48, 40]);
  assert.match(j.provenance.inputSize.why, /train.image-size/);
  assert.equal(j.trainData, 'procedural');
});

test('malformed metadata: the key is ignored with a problem naming it; the model still loads and runs', () => {
  const bad = { input_size: '[3,224', mean: '[0.5, "x", 0.5]', std: '[0.2,0,0.2]', labels: '["only","three","names"]' };
  const m = lab.loadModel(withMeta(IN1K_T, bad));
  try {
    const i = m.info;
    assert.deepEqual(i.inputSize, [3, 224, 224]);
    assert.match(i.provenance.inputSize.problem, /input_size '\[3,224' is not \[3, H, W\]/);
    assert.deepEqual(i.mean, [0.485, 0.456, 0.406]);
    assert.match(i.provenance.mean.problem, /mean '\[0.5, "x", 0.5\]' is not a JSON array of 3 numbers/);
    assert.match(i.provenance.std.problem, /std '\[0.2,0,0.2\]' is not a JSON array of 3 positive numbers/);
    assert.match(i.provenance.labels.problem, /labels has 3 names for 1000 classes/);
    assert.equal(i.labels.length, 1000);
    for (const k of ['inputSize', 'mean', 'std', 'labels']) assert.equal(i.provenance[k].from, 'assumed', k);
    assert.equal(m.eval().forward(new Float32Array(2 * 32 * 32 * 3), [2, 32, 32, 3]).length, 2000);
  } finally {
    m.dispose();
  }
  // values whose excerpt needs escaping in the card's JSON, and values JSON.parse would refuse
  for (const [key, v] of [['mean', '["\\"\\\\", 1, 2]'], ['labels', '["a\\u00zz"]'], ['labels', '["a" "b"]'],
    ['input_size', '[3,1e999,2]'], ['input_size', '\u0001\u0002'], ['labels', 'tench'], ['std', '[1,2,3,]']]) {
    const i = info(withMeta(R50, { [key]: v }));
    const k = key === 'input_size' ? 'inputSize' : key;
    assert.equal(i.provenance[k].from, 'assumed', `${key}=${v}`);
    assert.ok(i.provenance[k].problem, `${key}=${v} has a problem`);
    if (key === 'labels') assert.equal(i.labels, undefined);
  }
});
