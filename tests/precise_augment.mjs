// Does PreciseBN need the training augmentation? (issue 17: "explain when recomputing helps")
// The procedural demo model was trained on pad-cropped, flipped images (demo-models/resnet50-procedural.md);
// the page recomputes its running statistics on clean images and loses held-out accuracy. This recomputes
// them both ways (K batches of B from the procedural training set, clean or with the trainer's augmentation)
// and scores the same clean held-out images in eval mode, with Wilson 95 % intervals.
//   node tests/precise_augment.mjs [--k 16] [--b 32] [--n 2000]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { createBnLab } from '../web/bnlab.mjs';
import { wilson } from '../web/stats_ci.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, def) => { const i = process.argv.indexOf(`--${name}`); return Number(i > 0 ? process.argv[i + 1] : def); };
const K = arg('k', 16), B = arg('b', 32), N = arg('n', 2000);
const lab = await createBnLab();
const bytes = readFileSync(path.join(ROOT, 'demo-models', 'resnet50-procedural.safetensors'));
const ds = lab.procedural({ seed: 1, count: 10000, classes: 10, size: 64 });     // the trainer's data
const held = lab.procedural({ seed: 99, count: N, classes: 10, size: 64 });      // other images of the same generator
const score = (m) => {
  let right = 0;
  m.eval();
  for (let s = 0; s < N; s += 250) {
    const n = Math.min(250, N - s), b = held.batch(s, n), lg = m.forward(b.x, [n, 64, 64, 3]);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < 10; k++) if (lg[i * 10 + k] > lg[i * 10 + best]) best = k;
      right += best === b.labels[i] ? 1 : 0;
    }
  }
  return wilson(right, N);
};
const show = (w) => `${(100 * w.p).toFixed(1)} % [${(100 * w.lo).toFixed(1)}, ${(100 * w.hi).toFixed(1)}]`;
console.log(`${os.cpus()[0].model}; K = ${K} batches of B = ${B} from the training set; ${N} clean held-out images`);
console.log(`running statistics as trained:   ${show(score(lab.loadModel(bytes)))}`);
for (const augment of [false, true]) {
  const m = lab.loadModel(bytes), acc = m.preciseBNBegin();
  for (let k = 0; k < K; k++) {
    const b = ds.batch((k * B) % 10000, B, { augment, seed: 1000 + k });
    acc.add(b.x, [B, 64, 64, 3]);
  }
  acc.end();
  acc.dispose();
  console.log(`PreciseBN, ${augment ? 'augmented (pad-crop + flip)' : 'clean images            '}: ${show(score(m))}`);
  m.dispose();
}
