// TensorFlow.js wasm backend (XNNPACK) running a torchvision ResNet (eval mode) from a safetensors
// state dict, for tests/bench_wasm_vs_ort.mjs. NHWC input, as bnlab's.
//
//   const peer = await tfjsResNet(tensors, { threads: 1 });   // null (with peer.why) when TF.js is missing
//   const logits = peer.run(nhwc, [n, h, w, 3]);               // Float32Array [n * classes]
//
// Eval BatchNorm is folded into the conv weights and a bias once at load (what bnlab does too), so
// each conv is one tf.fused.conv2d with bias (+ ReLU). Two traps of 4.22's wasm backend, found
// measuring it here (../shared/PEERS.md): tf.fused.matMul with transposeB and a bias adds the bias
// twice (so the fc weight is transposed once at load and transposeB is false), and PyTorch's max
// pool (3x3, stride 2, padding 1) is matched by padding with -Infinity and a 'valid' pool.
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

// TF.js's wasm backend turns threads off under Node (WASM_HAS_MULTITHREAD_SUPPORT is false there)
// and its Emscripten glue makes pthread workers from blob: URLs, which Node's workers cannot load.
// For threads > 1 this shim, used only by the benchmark: forces the flag; starts each pthread
// worker from the worker script's text (eval) and hands it the glue as a file path instead of a
// Blob; and, while the backend starts, reports twice the cores (the glue caps XNNPACK's threads at
// half of os.cpus()). What ran is checked afterwards: peer.threads is XNNPACK's own count.
function threadedShim(tf, wasmOut) {
  const wt = require('node:worker_threads'), os = require('node:os');
  // the text as the backend's own blob holds it (newlines inside its string literals escaped)
  const workerCode = require(join(wasmOut, 'tfjs-backend-wasm-threaded-simd.worker.js')).wasmWorkerContents
    .replace(/\n/g, '\\n');
  const dir = mkdtempSync(join(tmpdir(), 'bnlab-tfjs-'));
  const glue = join(dir, 'tfjs-backend-wasm-threaded-simd.js');
  writeFileSync(glue, readFileSync(join(wasmOut, 'tfjs-backend-wasm-threaded-simd.js')));
  const Orig = wt.Worker;
  class BlobWorker extends Orig {
    constructor(url, opts) {
      if (typeof url === 'string' && url.startsWith('blob:')) super(workerCode, { ...opts, eval: true });
      else super(url, opts);
    }
    postMessage(msg, ...rest) {
      if (msg && msg.cmd === 'load' && typeof msg.urlOrBlob !== 'string') msg = { ...msg, urlOrBlob: glue };
      return super.postMessage(msg, ...rest);
    }
  }
  wt.Worker = BlobWorker;
  const cpus = os.cpus;
  os.cpus = () => [...cpus(), ...cpus()];
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  return () => { os.cpus = cpus; };   // the workers stay BlobWorkers
}

export async function tfjsResNet(tensors, { threads = 1 } = {}) {
  let tf, wasm;
  try {
    tf = await import('@tensorflow/tfjs-core');
    wasm = await import('@tensorflow/tfjs-backend-wasm');
  } catch (e) {
    return { why: `cannot import @tensorflow/tfjs-core / tfjs-backend-wasm (${e.message.split('\n')[0]}); run npm ci` };
  }
  const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm'));
  const files = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];
  wasm.setWasmPaths(Object.fromEntries(files.map((f) => [f, join(dist, f)])));
  wasm.setThreadsCount(threads);
  const undo = threads > 1 ? threadedShim(tf, join(dirname(dist), 'wasm-out')) : () => {};
  try {
    if (!(await tf.setBackend('wasm'))) return { why: 'tf.setBackend("wasm") failed' };
    await tf.ready();
  } finally {
    undo();
  }
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const mt = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  const binary = !simd ? files[0] : mt ? files[2] : files[1];
  // what XNNPACK really runs on (1 when threads are off)
  const ranThreads = mt ? wasm.getThreadsCount() : 1;

  const T = (name) => {
    const t = tensors[name];
    if (!t) throw new Error(`tfjs peer: tensor ${name} missing`);
    return t;
  };
  // conv [O,I,kh,kw] + BatchNorm (eval) -> filter [kh,kw,I,O] scaled per O, bias
  const convBn = (conv, bn, stride, pad, relu) => {
    const w = T(`${conv}.weight`), [O, I, R, S] = w.shape;
    const g = T(`${bn}.weight`).data, b = T(`${bn}.bias`).data, m = T(`${bn}.running_mean`).data, v = T(`${bn}.running_var`).data;
    const f = new Float32Array(R * S * I * O), bias = new Float32Array(O);
    for (let o = 0; o < O; o++) {
      const sc = g[o] / Math.sqrt(v[o] + 1e-5);
      bias[o] = b[o] - m[o] * sc;
      for (let i = 0; i < I; i++)
        for (let r = 0; r < R; r++)
          for (let s = 0; s < S; s++) f[((r * S + s) * I + i) * O + o] = w.data[((o * I + i) * R + r) * S + s] * sc;
    }
    return { filter: tf.tensor4d(f, [R, S, I, O]), bias: tf.tensor1d(bias), stride, pad, relu };
  };
  const apply = (c, x) => tf.fused.conv2d({ x, filter: c.filter, strides: c.stride, pad: c.pad, bias: c.bias,
    activation: c.relu ? 'relu' : 'linear' });

  const stem = convBn('conv1', 'bn1', 2, 3, true);
  const blocks = [];
  for (let s = 1; tensors[`layer${s}.0.conv1.weight`]; s++)
    for (let i = 0; tensors[`layer${s}.${i}.conv1.weight`]; i++) {
      const p = `layer${s}.${i}`, stride = s > 1 && i === 0 ? 2 : 1;
      const bottleneck = !!tensors[`${p}.conv3.weight`];
      const convs = bottleneck
        ? [convBn(`${p}.conv1`, `${p}.bn1`, 1, 0, true), convBn(`${p}.conv2`, `${p}.bn2`, stride, 1, true),
          convBn(`${p}.conv3`, `${p}.bn3`, 1, 0, false)]
        : [convBn(`${p}.conv1`, `${p}.bn1`, stride, 1, true), convBn(`${p}.conv2`, `${p}.bn2`, 1, 1, false)];
      const down = tensors[`${p}.downsample.0.weight`] ? convBn(`${p}.downsample.0`, `${p}.downsample.1`, stride, 0, false) : null;
      blocks.push({ convs, down });
    }
  const fcw = T('fc.weight'), [K, F] = fcw.shape;
  const wt = new Float32Array(F * K);   // [F, K]: transposed once (transposeB + bias is the buggy path)
  for (let k = 0; k < K; k++) for (let j = 0; j < F; j++) wt[j * K + k] = fcw.data[k * F + j];
  const fcW = tf.tensor2d(wt, [F, K]), fcB = tf.tensor1d(T('fc.bias').data);

  const run = (nhwc, shape) => {
    const out = tf.tidy(() => {
      let x = apply(stem, tf.tensor4d(nhwc, shape));
      x = tf.maxPool(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], -Infinity), 3, 2, 'valid');
      for (const b of blocks) {
        let y = x;
        for (const c of b.convs) y = apply(c, y);
        x = tf.relu(tf.add(y, b.down ? apply(b.down, x) : x));
      }
      x = tf.mean(x, [1, 2]);
      return tf.fused.matMul({ a: x, b: fcW, bias: fcB });
    });
    const data = out.dataSync().slice();
    out.dispose();
    return data;
  };
  return { run, version: tf.version_core, simd, multithread: mt, binary, threads: ranThreads };
}
