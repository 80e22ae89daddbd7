// The wasm twin of `bnlab bench bn`: BatchNorm train forward, eval forward and backward on
// N=32, H=W=56, C=256 in the wasm build (SIMD128, one thread), against a memcpy of the same tensor
// inside wasm, measured in the same run. Calls the raw exports on preallocated wasm memory, so the
// bridge's copies in and out are not timed. One key=value line per measurement.
//   node tests/bench_bn_wasm.mjs [--n 32] [--hw 56] [--c 256] [--reps 9]
import { createBnLab } from '../web/bnlab.mjs';

const arg = (k, d) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? Number(process.argv[i + 1]) : d; };
const N = arg('n', 32), HW = arg('hw', 56), C = arg('c', 256), reps = arg('reps', 9);
const M = N * HW * HW, bytes = M * C * 4;
const lab = await createBnLab();
const ex = lab._ex;
const alloc = (b) => lab._malloc(b);
const [x, y, dy, dx] = [alloc(bytes), alloc(bytes), alloc(bytes), alloc(bytes)];
const [g, b, rm, rv, mean, invstd, v, dg, db] = Array.from({ length: 9 }, () => alloc(C * 4));
const nbt = alloc(8);
{
  const f = new Float32Array(ex.memory.buffer);
  let s = 1;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296) - 0.5;
  for (let i = 0; i < M * C; i++) { f[x / 4 + i] = 4 * rnd() + 0.5; f[dy / 4 + i] = 2 * rnd(); }
  for (let c = 0; c < C; c++) { f[g / 4 + c] = 1 + 0.01 * c; f[b / 4 + c] = 0; f[rm / 4 + c] = 0; f[rv / 4 + c] = 1; }
}
const median = (fn) => {
  fn(); fn();
  const t = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); fn(); t.push(performance.now() - t0); }
  return t.sort((a, c) => a - c)[t.length >> 1];
};
const check = (s) => { if (s !== 0) throw new Error(`bnlab: status ${s}`); };
const train = () => check(ex.bnl_wasm_bn_forward_train(y, mean, invstd, v, rm, rv, nbt, x, g, b, M, C, 1e-5, 0.9, 0));
const evalf = () => check(ex.bnl_wasm_bn_forward_eval(y, x, g, b, rm, rv, M, C, 1e-5, 0));
const backward = () => check(ex.bnl_wasm_bn_backward_train(dx, dg, db, dy, x, mean, invstd, g, b, M, C, 1e-5, 0));
train();
const mb = bytes / 1e6;
console.log(`# bench bn (wasm): N=${N} H=${HW} W=${HW} C=${C} (${mb.toFixed(1)} MB per tensor), isa=${lab.isa}, threads=1, median of ${reps}`);
const tCopy = median(() => ex.bnl_wasm_memcpy(y, x, bytes));
console.log(`bench=bn.memcpy.wasm ms=${tCopy.toFixed(3)} gbps=${(2 * mb / tCopy).toFixed(2)} threads=1`);
for (const [name, fn, tensors] of [['bn.train_forward.wasm', train, 2], ['bn.eval_forward.wasm', evalf, 2], ['bn.backward.wasm', backward, 3]]) {
  const t = median(fn);
  console.log(`bench=${name} ms=${t.toFixed(3)} gbps=${(tensors * mb / t).toFixed(2)} vs_memcpy=${(t / tCopy).toFixed(2)}`);
}
