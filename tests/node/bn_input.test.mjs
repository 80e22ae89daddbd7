// model.bnInput(x, shape, layer, channel): one channel of a BatchNorm layer's input (the convolution's
// output) after a train-mode forward up to it, with the channel's gamma, beta and eps (the page's
// "one channel, normalized" view). Its values must give, in float64, the batch mean and biased
// variance forwardTo reports for that channel; gamma/beta must be the file's; bad calls are Errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors } from './safetensors.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILE = `${ROOT}demo-models/resnet50-procedural.safetensors`;
const SHAPE = [3, 64, 64, 3];
const X = new Float32Array(SHAPE.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.71) * 1.5);

for (const threads of [1, 2]) {
  test(`bnInput (${threads} thread(s)): the values give forwardTo's batch statistics; gamma/beta are the file's`, async () => {
    const lab = await createBnLab({ threads });
    const file = readSafetensors(FILE).tensors;
    try {
      const m = lab.loadModel(new Uint8Array((await import('node:fs')).readFileSync(FILE))).train();
      const names = m.info.bnLayers;
      const targets = [0, 1, names.indexOf('layer2.0.downsample.1'), 30, names.length - 1];
      for (const i of targets) {
        const C = m.bnStats(i).channels;
        for (const c of [0, C - 1, C >> 1]) {
          const r = m.bnInput(X, SHAPE, i, c);
          const st = m.forwardTo(X, SHAPE, i);
          const n = r.values.length;
          assert.equal(n % SHAPE[0], 0);
          let s = 0;
          for (const v of r.values) s += v;
          const mean = s / n;
          let q = 0;
          for (const v of r.values) q += (v - mean) ** 2;
          const v = q / n;
          const tol = (a, b) => Math.abs(a - b) <= 2e-5 * Math.max(1, Math.abs(b));
          assert.ok(tol(mean, st.batchMean[c]), `${names[i]}[${c}] mean ${mean} vs ${st.batchMean[c]}`);
          assert.ok(tol(v, st.batchVar[c]), `${names[i]}[${c}] var ${v} vs ${st.batchVar[c]}`);
          assert.equal(r.gamma, file[`${names[i]}.weight`].data[c]);
          assert.equal(r.beta, file[`${names[i]}.bias`].data[c]);
          assert.equal(r.eps, Math.fround(1e-5));
        }
      }
      m.dispose();
    } finally {
      lab.terminate();
    }
  });
}

test('bnInput: bad calls are Errors naming the problem; the model stays usable', async () => {
  const lab = await createBnLab({ threads: 1 });
  const m = lab.loadModel(new Uint8Array((await import('node:fs')).readFileSync(FILE)));
  assert.throws(() => m.bnInput(X, SHAPE, 'bn1', 0), /eval mode/);
  m.train();
  assert.throws(() => m.bnInput(X, SHAPE, 'layer9.0.bn1', 0), /no BatchNorm layer/);
  assert.throws(() => m.bnInput(X, SHAPE, 'bn1', 16), /no channel 16 in bn1/);
  assert.throws(() => m.bnInput(X, SHAPE, 'bn1', -1), /no channel -1/);
  assert.throws(() => m.bnInput(X, SHAPE, 'bn1', 1.5), /integer/);
  assert.throws(() => m.bnInput(X, [3, 64, 64, 4], 'bn1', 0), /4 channels|values/);
  const r = m.bnInput(X, SHAPE, 'bn1', 3);
  assert.equal(r.values.length, 3 * 32 * 32);
  m.dispose();
  lab.terminate();
});

// forwardBnInput: the page's run gets its channel view from the run's own forward. Its logits are a
// train-mode forward's and its input values bnInput's, bit for bit, at every kind of layer (stem,
// inside a block, the last layer of a block whose apply is fused into the block's output, a downsample).
test('forwardBnInput: the logits of forward and the values of bnInput, bit for bit, in one forward', async () => {
  const lab = await createBnLab({ threads: 2 });
  const bits = (a) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
  try {
    const bytes = new Uint8Array((await import('node:fs')).readFileSync(FILE));
    const m = lab.loadModel(bytes), ref = lab.loadModel(bytes);
    m.cloneContext().dispose();
    const names = m.info.bnLayers;
    const logits = ref.train().forward(X, SHAPE);
    for (const i of [0, 1, names.indexOf('layer1.0.bn3'), names.indexOf('layer2.0.downsample.1'), names.length - 1]) {
      const C = m.bnStats(i).channels;
      for (const c of [0, C - 1]) {
        const want = ref.bnInput(X, SHAPE, i, c);
        const got = m.train().forwardBnInput(X, SHAPE, i, c);
        assert.deepEqual(bits(got.input.values), bits(want.values), `${names[i]}[${c}] values`);
        assert.deepEqual([got.input.gamma, got.input.beta, got.input.eps], [want.gamma, want.beta, want.eps]);
        assert.deepEqual(bits(got.logits), bits(ref.forward(X, SHAPE)), `${names[i]}[${c}] logits`);
      }
    }
    assert.throws(() => m.eval().forwardBnInput(X, SHAPE, 0, 0), /forward_bn_input: the model is in eval mode/);
    assert.throws(() => m.train().forwardBnInput(X, SHAPE, 0, 99), /no channel 99 in bn1/);
    assert.throws(() => m.forwardBnInput(X, SHAPE, 0, 0.5), /integer/);
    // after an error the next forward is a plain one again (no copy left armed)
    assert.deepEqual(bits(m.forward(X, SHAPE)), bits(ref.forward(X, SHAPE)));
    m.dispose(), ref.dispose();
  } finally {
    lab.terminate();
  }
});
