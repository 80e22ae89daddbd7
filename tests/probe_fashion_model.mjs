// Measures a model trained on Fashion-MNIST through web/bnlab.mjs (wasm) on the real test images:
// eval-mode top-1 on all 10,000 (equal to bnlab train's val_top1 for a model trained with the whole
// test split as validation), and train-mode top-1 (batch statistics) in batches of B = 2 ... 128 on
// the first --n images. Prints a Markdown table (used in demo-models/*.md).
//   node tests/probe_fashion_model.mjs demo-models/resnet18-fashion-mnist.safetensors [--n 1024]
import { readFileSync } from 'node:fs';
import { createBnLab } from '../web/bnlab.mjs';

const args = process.argv.slice(2);
const file = args[0];
const n = args.includes('--n') ? Number(args[args.indexOf('--n') + 1]) : 1024;
const dir = process.env.BNL_FASHION_MNIST || '/usr/share/datasets/fashion-mnist';
const lab = await createBnLab();
const m = lab.loadModel(new Uint8Array(readFileSync(file)));
const data = await lab.loadIdxDataset(readFileSync(`${dir}/t10k-images-idx3-ubyte.gz`), readFileSync(`${dir}/t10k-labels-idx1-ubyte.gz`),
  { model: m, fashionMnist: true });
const S = data.height, K = m.info.numClasses;
function top1(mode, B, N) {
  if (mode === 'eval') m.eval(); else m.train();
  let right = 0, seen = 0;
  for (let s = 0; s + B <= N; s += B) {
    const { x, labels } = data.batch(s, B);
    const z = m.forward(x, [B, S, S, 3]);
    for (let i = 0; i < B; i++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (z[i * K + k] > z[i * K + best]) best = k;
      right += best === labels[i] ? 1 : 0;
    }
    seen += B;
  }
  return right / seen;
}
const t0 = Date.now();
const ev = top1('eval', 100, data.count);   // eval first: train-mode forwards move the running statistics
const Bs = [2, 4, 8, 16, 32, 64, 128];
const tr = Bs.map((B) => top1('train', B, n));
console.log(`${file}: ${S}x${S}, eval-mode top-1 on all ${data.count} test images: ${(100 * ev).toFixed(2)} %`);
console.log(`\n| batch | ${Bs.join(' | ')} |\n|---|${Bs.map(() => '---:').join('|')}|`);
console.log(`| train-mode top-1 (first ${n} test images) | ${tr.map((v) => `${(100 * v).toFixed(1)} %`).join(' | ')} |`);
console.log(`\n(${((Date.now() - t0) / 1000).toFixed(0)} s in wasm, ${lab.isa})`);
