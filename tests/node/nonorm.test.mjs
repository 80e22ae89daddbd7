// A ResNet without normalization (`bnlab train --norm none`, __metadata__ "bnlab.norm": "none") through
// web/bnlab.mjs, against the PyTorch fixtures of tests/gen_fixtures_nonorm.py (tests/fixtures/nonorm).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors, parseSafetensors, writeSafetensors, assertClose } from './safetensors.mjs';

const FIX = fileURLToPath(new URL('../fixtures/nonorm/', import.meta.url));
const lab = await createBnLab();
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

for (const name of ['basic', 'bottleneck']) {
  const bytes = new Uint8Array(readFileSync(join(FIX, `${name}.weights.safetensors`)));
  const weights = parseSafetensors(bytes).tensors;
  const inp = readSafetensors(join(FIX, `${name}.input.safetensors`)).tensors;
  const exp = readSafetensors(join(FIX, `${name}.expected.safetensors`)).tensors;
  const x = inp.input.data, shape = inp.input.shape, labels = Array.from(inp.labels.data, Number);

  test(`${name}: info.norm is 'none'; eval and train mode give PyTorch's logits; running stats never move`, () => {
    const m = lab.loadModel(bytes);
    try {
      assert.equal(m.info.norm, 'none');
      const rm0 = m.bnStats(0).runningMean.slice(), rv0 = m.bnStats(0).runningVar.slice();
      const tol = { atol: 1e-4 * maxAbs(exp.logits.data), rtol: 1e-4 };
      assertClose(m.eval().forward(x, shape), exp.logits.data, { ...tol, what: 'eval logits' });
      assertClose(m.train().forward(x, shape), exp.logits.data, { ...tol, what: 'train logits' });
      const s = m.bnStats(0);
      assert.equal(s.batchMean, null, 'no batch statistics without normalization');
      assert.deepEqual(s.runningMean, rm0);
      assert.deepEqual(s.runningVar, rv0);
      assert.equal(s.numBatchesTracked, 7);
    } finally { m.dispose(); }
  });

  test(`${name}: one SGD step matches PyTorch and keeps the mode in saveState()`, () => {
    const m = lab.loadModel(bytes);
    try {
      const loss = m.step(x, shape, labels, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
      assertClose([loss], exp.step_loss.data, { atol: 1e-6, rtol: 1e-5, what: 'step loss' });
      const saved = parseSafetensors(m.saveState());
      assert.equal(saved.metadata['bnlab.norm'], 'none');
      for (const k of Object.keys(weights)) {
        const want = exp[`after_step.${k}`], got = saved.tensors[k];
        if (want.dtype === 'I64') assert.deepEqual(Array.from(got.data, Number), Array.from(want.data, Number), k);
        else assertClose(got.data, want.data, { atol: 1e-5, rtol: 1e-4, what: `after_step.${k}` });
      }
    } finally { m.dispose(); }
  });
}

test('the same weights without the key are a BatchNorm model: info.norm "batch", other logits', () => {
  const { tensors } = parseSafetensors(new Uint8Array(readFileSync(join(FIX, 'basic.weights.safetensors'))));
  const inp = readSafetensors(join(FIX, 'basic.input.safetensors')).tensors;
  const exp = readSafetensors(join(FIX, 'basic.expected.safetensors')).tensors;
  const m = lab.loadModel(writeSafetensors(tensors, {}));
  try {
    assert.equal(m.info.norm, 'batch');
    const z = m.eval().forward(inp.input.data, inp.input.shape);
    const d = Math.max(...Array.from(z, (v, i) => Math.abs(v - exp.logits.data[i])));
    assert.ok(d > 1e-3, `BatchNorm eval gave the affine logits (max diff ${d})`);
  } finally { m.dispose(); }
});

test('"bnlab.norm" other than batch/none is a clear Error naming the key; the instance stays usable', () => {
  const { tensors } = parseSafetensors(new Uint8Array(readFileSync(join(FIX, 'basic.weights.safetensors'))));
  assert.throws(() => lab.loadModel(writeSafetensors(tensors, { 'bnlab.norm': 'group' })),
    (e) => e instanceof Error && /bnlab\.norm/.test(e.message) && /group/.test(e.message));
  const m = lab.loadModel(new Uint8Array(readFileSync(join(FIX, 'basic.weights.safetensors'))));
  assert.equal(m.info.norm, 'none');
  m.dispose();
});
