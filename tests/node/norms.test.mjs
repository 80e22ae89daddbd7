// GroupNorm, Batch Renorm, Ghost BatchNorm and frozen BatchNorm (`bnlab train --norm group:G|renorm|ghost:V|frozen`,
// __metadata__ "bnlab.norm") through web/bnlab.mjs, against the PyTorch fixtures of tests/gen_fixtures_norms.py
// (tests/fixtures/norms): info.norm, eval and train logits, running statistics, normStats, one SGD step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab } from '../../web/bnlab.mjs';
import { readSafetensors, parseSafetensors, writeSafetensors, assertClose } from './safetensors.mjs';

const FIX = fileURLToPath(new URL('../fixtures/norms/', import.meta.url));
const lab = await createBnLab();
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const NORM = { group: 'group:4', renorm: 'renorm', ghost: 'ghost:2', frozen: 'frozen' };
// normStats' two arrays per kind and the fixture keys they are checked against
const VIEW = { group: ['groupMean', 'groupVar', 'group_mean', 'group_var'], renorm: ['r', 'd', 'renorm_r', 'renorm_d'],
  ghost: ['virtualMean', 'virtualVar', 'ghost_mean', 'ghost_var'] };

for (const kind of Object.keys(NORM)) {
  for (const name of ['basic', 'bottleneck']) {
    const bytes = new Uint8Array(readFileSync(join(FIX, `${kind}-${name}.weights.safetensors`)));
    const inp = readSafetensors(join(FIX, `${name}.input.safetensors`)).tensors;
    const exp = readSafetensors(join(FIX, `${kind}-${name}.expected.safetensors`)).tensors;
    const x = inp.input.data, shape = inp.input.shape, labels = Array.from(inp.labels.data, Number);

    test(`${kind} ${name}: info.norm, PyTorch's eval and train logits, running and per-layer statistics`, () => {
      const m = lab.loadModel(bytes);
      try {
        assert.equal(m.info.norm, NORM[kind]);
        if (kind === 'renorm') assert.deepEqual(m.info.renorm, { rmax: 1.5, dmax: 0.5 });
        else assert.equal(m.info.renorm, undefined);
        assert.equal(m.normStats(0), null, 'nothing before a forward');
        const tol = (e) => ({ atol: 1e-4 * maxAbs(e.data), rtol: 1e-4 });
        assertClose(m.eval().forward(x, shape), exp.logits_eval.data, { ...tol(exp.logits_eval), what: 'eval logits' });
        if (kind === 'group') assert.equal(m.normStats(0).images, shape[0], 'GroupNorm: statistics in eval mode too');
        else assert.equal(m.normStats(0), null, `${kind}: an eval forward has no ${kind} statistics`);
        assertClose(m.train().forward(x, shape), exp.logits_train.data,
          { ...tol(exp.logits_train), what: 'train logits' });
        for (const layer of m.info.bnLayers) {
          const s = m.bnStats(layer);
          if (kind !== 'group') {
            assertClose(s.runningMean, exp[`after_train_forward.${layer}.running_mean`].data,
              { atol: 1e-5, rtol: 1e-4, what: `${layer} running mean` });
            assertClose(s.runningVar, exp[`after_train_forward.${layer}.running_var`].data,
              { atol: 1e-5, rtol: 1e-4, what: `${layer} running var` });
          }
          assert.equal(s.batchMean === null, kind === 'group' || kind === 'frozen', `${layer}: batch statistics`);
          const v = m.normStats(layer);
          if (!VIEW[kind]) { assert.equal(v, null); continue; }
          assert.equal(v.kind, kind);
          const [a, b, ka, kb] = VIEW[kind];
          assertClose(v[a], exp[`${ka}.${layer}`].data, { atol: 1e-5, rtol: 1e-4, what: `${layer} ${a}` });
          assertClose(v[b], exp[`${kb}.${layer}`].data, { atol: 1e-5, rtol: 1e-4, what: `${layer} ${b}` });
          if (kind === 'group') assert.deepEqual([v.images, v.groups], [shape[0], 4]);
          if (kind === 'ghost') assert.deepEqual([v.virtualBatches, v.channels], [shape[0] / 2, s.channels]);
        }
      } finally { m.dispose(); }
    });

    test(`${kind} ${name}: one SGD step matches PyTorch; saveState() keeps the kind and torch's names`, () => {
      const m = lab.loadModel(bytes);
      try {
        const loss = m.step(x, shape, labels, { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
        assertClose([loss], exp.step_loss.data, { atol: 1e-6, rtol: 1e-5, what: 'step loss' });
        const saved = parseSafetensors(m.saveState());
        assert.equal(saved.metadata['bnlab.norm'], NORM[kind]);
        const want = Object.keys(exp).filter((k) => k.startsWith('after_step.')).map((k) => k.slice(11)).sort();
        assert.deepEqual(Object.keys(saved.tensors).sort(), want, 'the saved names are the torch state dict\'s');
        for (const k of want) {
          const w = exp[`after_step.${k}`], got = saved.tensors[k];
          if (w.dtype === 'I64') assert.deepEqual(Array.from(got.data, Number), Array.from(w.data, Number), k);
          else assertClose(got.data, w.data, { atol: 1e-5, rtol: 1e-4, what: `after_step.${k}` });
        }
      } finally { m.dispose(); }
    });
  }
}

test('bad "bnlab.norm" strings and renorm bounds are clear Errors naming the key; the instance stays usable', () => {
  const { tensors, metadata } = parseSafetensors(new Uint8Array(readFileSync(join(FIX, 'group-basic.weights.safetensors'))));
  for (const [key, value, re] of [['bnlab.norm', 'group:3', /group:3.*do not divide/],
    ['bnlab.norm', 'ghost:x', /bnlab\.norm.*ghost:x/], ['bnlab.norm', 'batch', /running_mean/]]) {
    assert.throws(() => lab.loadModel(writeSafetensors(tensors, { ...metadata, [key]: value })),
      (e) => e instanceof Error && re.test(e.message), `${key}=${value}`);
  }
  const r = parseSafetensors(new Uint8Array(readFileSync(join(FIX, 'renorm-basic.weights.safetensors'))));
  assert.throws(() => lab.loadModel(writeSafetensors(r.tensors, { ...r.metadata, 'bnlab.renorm_dmax': '-1' })),
    (e) => e instanceof Error && /bnlab\.renorm_dmax/.test(e.message));
  const g = lab.loadModel(new Uint8Array(readFileSync(join(FIX, 'ghost-basic.weights.safetensors'))));
  try {   // a batch the virtual batches do not divide: a clear Error, and the model still works
    const inp = readSafetensors(join(FIX, 'basic.input.safetensors')).tensors;
    const [n, h, w, c] = inp.input.shape;
    const x3 = inp.input.data.subarray(0, 3 * h * w * c);
    assert.throws(() => g.train().forward(x3, [3, h, w, c]), (e) => /ghost:2.*batch of 3/.test(e.message));
    assert.equal(g.eval().forward(x3, [3, h, w, c]).length, 3 * 7, 'eval needs no virtual batches');
    assert.equal(g.train().forward(inp.input.data, [n, h, w, c]).length, n * 7);
  } finally { g.dispose(); }
});

test('demo-models/norms: every small model loads, its kind matches its name, eval and train forwards run', () => {
  const DEMO = fileURLToPath(new URL('../../demo-models/norms/', import.meta.url));
  const want = { batch: 'batch', group: 'group:4', renorm: 'renorm', ghost: 'ghost:4', none: 'none', frozen: 'frozen' };
  const x = new Float32Array(8 * 32 * 32 * 3).map((_, i) => Math.sin(i * 0.37));
  for (const [file, norm] of Object.entries(want)) {
    const m = lab.loadModel(new Uint8Array(readFileSync(join(DEMO, `${file}.safetensors`))));
    try {
      assert.equal(m.info.norm, norm, file);
      assert.equal(m.info.numClasses, 4);
      const e = m.eval().forward(x, [8, 32, 32, 3]), t = m.train().forward(x, [8, 32, 32, 3]);
      assert.ok(e.every(Number.isFinite) && t.every(Number.isFinite), file);
      // GroupNorm, frozen BatchNorm and no normalization compute the same function in both modes; the others do not
      const same = e.every((v, i) => Math.abs(v - t[i]) <= 1e-5 * (1 + Math.abs(v)));
      assert.equal(same, ['none', 'frozen', 'group:4'].includes(norm), `${file}: eval == train`);
    } finally { m.dispose(); }
  }
});
