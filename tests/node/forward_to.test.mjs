// model.forwardTo(x, shape, layer): the train-mode forward only up to one BatchNorm layer (the
// page's per-layer views). Every layer up to it must get bitwise the statistics a full forward
// gives (batch and running); later layers must not move; bad calls are Errors. Both builds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEIGHTS = new Uint8Array(readFileSync(`${ROOT}demo-models/resnet50-procedural.safetensors`));
const SHAPE = [6, 64, 64, 3];
const X = new Float32Array(SHAPE.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.71) * 1.5);

const same = (a, b) => a.length === b.length && a.every((v, k) => Object.is(v, b[k]));
const KEYS = ['batchMean', 'batchVar', 'runningMean', 'runningVar'];

for (const threads of [1, 2]) {
  test(`forwardTo (${threads} thread(s)): layers up to the target equal a full forward's, later ones do not move`, async () => {
    const lab = await createBnLab({ threads });
    try {
      const full = lab.loadModel(WEIGHTS).train();
      full.forward(X, SHAPE);
      const names = full.info.bnLayers;
      // the stem, a first block's bn1, a downsample layer, a middle one, the last
      const targets = [0, 1, names.indexOf('layer2.0.downsample.1'), 30, names.length - 1];
      assert.ok(targets.every((i) => i >= 0));
      for (const i of targets) {
        const part = lab.loadModel(WEIGHTS).train();
        const before = names.map((n) => part.bnStats(n));
        const st = part.forwardTo(X, SHAPE, names[i]);
        assert.equal(st.layer, names[i]);
        for (let j = 0; j < names.length; j++) {
          const got = part.bnStats(j);
          if (j <= i) {
            const want = full.bnStats(j);
            for (const k of KEYS) assert.ok(same(got[k], want[k]), `target ${names[i]}: ${names[j]}.${k} differs from the full forward`);
          } else {
            for (const k of ['runningMean', 'runningVar'])
              assert.ok(same(got[k], before[j][k]), `target ${names[i]}: ${names[j]}.${k} moved`);
          }
        }
        part.dispose();
      }
      full.dispose();
    } finally {
      lab.terminate();
    }
  });
}

test('forwardTo: bad calls are Errors naming the problem; the model stays usable', async () => {
  const lab = await createBnLab({ threads: 1 });
  const m = lab.loadModel(WEIGHTS);
  assert.throws(() => m.forwardTo(X, SHAPE, 'bn1'), /eval mode/);
  m.train();
  assert.throws(() => m.forwardTo(X, SHAPE, 'layer9.0.bn1'), /no BatchNorm layer/);
  assert.throws(() => m.forwardTo(X, SHAPE, 999), /no BatchNorm layer/);
  assert.throws(() => m.forwardTo(X, SHAPE, -1), /no BatchNorm layer/);
  assert.throws(() => m.forwardTo(X, [6, 64, 64], 'bn1'), /shape/);
  assert.throws(() => m.forwardTo(X, [6, 64, 64, 4], 'bn1'), /4 channels|values/);
  const st = m.forwardTo(X, SHAPE, 'bn1');
  assert.equal(st.channels, 16);
  assert.ok(st.batchVar.every((v) => v > 0));
  m.dispose();
  assert.throws(() => m.forwardTo(X, SHAPE, 'bn1'), /disposed/);
});
