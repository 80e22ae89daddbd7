// The BatchNorm demonstration of `bnlab demo`, run on the wasm build through web/bnlab.mjs.
// Same data generator (splitmix64 + Box-Muller, as src/core/rng.h) and the same table.
import { createBnLab } from './bnlab.mjs';

function rng(seed) {
  let s = (BigInt(seed) * 0x9E3779B97F4A7C15n + 1n) & 0xFFFFFFFFFFFFFFFFn;
  const u64 = () => {
    s = (s + 0x9E3779B97F4A7C15n) & 0xFFFFFFFFFFFFFFFFn;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & 0xFFFFFFFFFFFFFFFFn;
    z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & 0xFFFFFFFFFFFFFFFFn;
    return z ^ (z >> 31n);
  };
  const uniform = () => Number(u64() >> 11n) / 9007199254740992;
  const normal = () => {
    let u1 = uniform(); const u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(6.283185307179586 * u2);
  };
  return { uniform, normal };
}

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const hw = arg('hw', 4), C = arg('channels', 8), steps = arg('steps', 50), seed = arg('seed', 1);

const lab = await createBnLab();
const r = rng(seed);
const trueMean = new Float32Array(C), trueStd = new Float32Array(C);
for (let c = 0; c < C; c++) { trueMean[c] = r.normal() * 2; trueStd[c] = 0.5 + 2 * r.uniform(); }
const f = (v, w) => v.toFixed(4).padStart(w);
console.log(`bnlab BatchNorm demo (wasm, isa=${lab.isa}): ${C} channels, ${hw}x${hw} per sample, momentum 0.90, eps 1e-05`);
console.log(`channel 0 truth: mean ${trueMean[0].toFixed(4)} var ${(trueStd[0] * trueStd[0]).toFixed(4)}`);
console.log(['batch', 'last_mean', 'last_var', 'running_mean', 'running_var', 'sd(batchmean)', 'sigma/sqrt(n)', 'eval_out_mean']
  .map((h, i) => h.padStart([6, 10, 10, 12, 12, 12, 12, 14][i])).join(' '));
const sample = (M) => {
  const x = new Float32Array(M * C);
  for (let i = 0; i < M; i++) for (let c = 0; c < C; c++) x[i * C + c] = trueMean[c] + trueStd[c] * Math.fround(r.normal());
  return x;
};
for (const B of [1, 2, 8, 32, 128]) {
  const M = B * hw * hw;
  let runningMean = new Float32Array(C), runningVar = new Float32Array(C).fill(1);
  let s1 = 0, s2 = 0, last;
  try {
    for (let k = 0; k < steps; k++) {
      last = lab.batchNorm.forwardTrain(sample(M), M, C, { runningMean, runningVar });
      runningMean = last.runningMean; runningVar = last.runningVar;
      s1 += last.mean[0]; s2 += last.mean[0] * last.mean[0];
    }
  } catch (e) {
    console.log(`${String(B).padStart(6)}  train mode refused: ${e.message}`);
    continue;
  }
  const m = s1 / steps, sd = Math.sqrt(Math.max(s2 / steps - m * m, 0));
  const y = lab.batchNorm.forwardEval(sample(M), M, C, { runningMean, runningVar });
  let om = 0; for (let i = 0; i < M; i++) om += y[i * C];
  console.log(`${String(B).padStart(6)} ${f(last.mean[0], 10)} ${f(last.var[0], 10)} ${f(runningMean[0], 12)} ${f(runningVar[0], 12)} ${f(sd, 12)} ${f(trueStd[0] / Math.sqrt(M), 12)} ${f(om / M, 14)}`);
}
console.log('Larger batches: batch statistics wander less (sd ~ sigma/sqrt(N*H*W)), so the running averages\nthat eval mode uses sit closer to the truth.');
