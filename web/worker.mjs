// worker.mjs: all of the demo page's compute, in a module Web Worker, so the page never freezes.
//
// Protocol: the page posts { id, cmd, args }; the worker answers { id, ok: true, result } or
// { id, ok: false, error }, and long jobs post { id, progress } on the way. `stop` (no id needed)
// asks the running long job (spread, precise, train) to end after its current batch.
//
// Two models live here: `main`, the model as the user loaded it (eval-mode forwards, and every
// running statistic the page shows), and `scratch`, a copy of it that takes the train-mode forwards.
// A train-mode forward's output does not depend on the running statistics, so the copy gives the
// same batch statistics and logits while the loaded model's running statistics stay as they were.
// Only "update running stats" (the forgotten .eval() on purpose) and "train here" touch `main`.
import { createBnLab } from './bnlab.mjs';

const EPS = 1e-5;
const DATASET_COUNT = 1 << 24;   // procedural images are drawn on demand: the count costs nothing

const S = {
  lab: null,
  main: null,          // the loaded model
  scratch: null,       // a copy for train-mode forwards (same weights; its running stats are never shown)
  original: null,      // bytes of the loaded file, for "reset"
  name: '',
  modified: false,     // true after train-here, PreciseBN or updating running stats
  size: 64,            // input size (model metadata input_size, default 64)
  data: null,          // procedural dataset of the model's input size
  userImages: [],      // Float32Array(size*size*3) each, normalized by the page
  msPerImage: 0,       // one eval-mode image, measured at load
  stopRequested: false,
  busy: null,          // name of the running long job
};

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const yieldToEvents = () => new Promise((r) => setTimeout(r, 0));
const timed = (fn) => { const t = performance.now(); const r = fn(); return [r, performance.now() - t]; };

// ---- model handling ---------------------------------------------------------------------------
function inputSizeOf(info) {
  let s = info.inputSize;
  if (Array.isArray(s)) s = s[s.length - 1] === 3 ? s[s.length - 2] : s[s.length - 1];
  s = Number(s);
  return Number.isInteger(s) && s >= 16 && s <= 1024 ? s : 64;
}

function triple(v, dflt) {
  if (Array.isArray(v) && v.length === 3 && v.every((x) => Number.isFinite(Number(x)))) return v.map(Number);
  return dflt;
}

// How the page normalizes the user's images: the model's mean/std metadata, else ImageNet's.
function imageNorm() {
  const info = S.main.info;
  return { mean: triple(info.mean, [0.485, 0.456, 0.406]), std: triple(info.std, [0.229, 0.224, 0.225]) };
}

function describe() {
  const info = S.main.info;
  return {
    name: S.name,
    modified: S.modified,
    info: { ...info, bnLayers: [...info.bnLayers] },
    inputSize: S.size,
    ...imageNorm(),
    normFromModel: triple(info.mean, null) !== null && triple(info.std, null) !== null,
    dataset: S.data.describe(),
    msPerImage: S.msPerImage,
    bnChannels: info.bnLayers.map((_, i) => S.main.bnStats(i).channels),
  };
}

// Makes `main` (just loaded from `bytes`) the live model. Everything that can fail happens before
// the previous model is let go, so a failure leaves the page with the model it had.
function setModel(main, bytes, name, { keepOriginal = false } = {}) {
  if (main.info.inChannels !== 3) throw new Error(`bnlab: this model takes ${main.info.inChannels} input channels; the page feeds RGB images (3)`);
  const size = inputSizeOf(main.info);
  const classes = Math.min(Math.max(main.info.numClasses, 2), 16);
  let scratch = null, data = S.data, newData = null, ms;
  try {
    scratch = S.lab.loadModel(bytes);
    if (!data || data.size !== size || data.classes !== classes) data = newData = makeDataset(size, classes);
    // what one image costs (eval forward; the first call also sizes the activation memory)
    const one = new Float32Array(size * size * 3), shape1 = [1, size, size, 3];
    [, ms] = timed(() => main.eval().forward(one, shape1));
    if (ms < 200) [, ms] = timed(() => main.forward(one, shape1));
  } catch (e) {
    if (scratch) scratch.dispose();
    if (newData) newData.dispose();
    throw e;
  }
  if (S.main) S.main.dispose();
  if (S.scratch) S.scratch.dispose();
  if (newData && S.data) S.data.dispose();
  Object.assign(S, { main, scratch, data, size, msPerImage: ms });
  if (!keepOriginal) {
    S.original = bytes;
    S.name = name;
    S.modified = false;
    S.userImages = [];   // the page re-sends them at the new size
  }
}

function loadBytes(bytes, name) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const main = S.lab.loadModel(bytes);   // throws on a bad file; the previous model stays
  try {
    setModel(main, bytes, name);
  } catch (e) {
    main.dispose();
    throw e;
  }
  return describe();
}

// Replaces the live state (after train-here or PreciseBN) keeping the file name and original bytes.
function replaceState(bytes) {
  const main = S.lab.loadModel(bytes);
  setModel(main, bytes, S.name, { keepOriginal: true });
  S.modified = true;
}

// ---- procedural data --------------------------------------------------------------------------
// The procedural dataset of the wasm build (src/io/dataset.h): image i depends only on (seed, i).
// Its labels cycle through the classes, so batches take random indices (drawn from a seed and a
// stream), as a shuffled loader would: consecutive images would make every batch the same mix.
function makeDataset(size, classes) {
  const ds = S.lab.procedural({ seed: 1, count: DATASET_COUNT, classes, size });
  return {
    size, classes,
    // { x: Float32Array (n,size,size,3) normalized, labels: Int32Array, indices }
    batch(indices) { return { ...ds.batchIndices(indices), indices }; },
    image(i) { return ds.image(i); },
    describe() { return { source: 'wasm', classes, size, names: ds.classNames }; },
    dispose() { ds.dispose(); },
  };
}

// n image indices drawn from (seed, stream): splitmix32-style hashing, so a batch never depends on
// what was drawn before it, and a longer batch of the same (seed, stream) starts with the shorter one.
function indices(seed, stream, n) {
  const out = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul((stream >>> 0) + 0x632be5ab, 0xc2b2ae35);
    h = Math.imul(h ^ (h >>> 16) ^ Math.imul(k + 1, 0x27d4eb2f), 0x7feb352d);
    h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
    h ^= h >>> 16;
    out[k] = (h >>> 0) % DATASET_COUNT;
  }
  return out;
}
const STREAM = { run: 1, spread: 2, precise: 3, train: 4, heldOut: 5 };

// Batch `seed` of size B: the user's images first (up to B), then procedural images.
function makeBatch(seed, B) {
  const D = S.size * S.size * 3;
  const user = S.userImages.slice(0, B);
  const nProc = B - user.length;
  const x = new Float32Array(B * D);
  const labels = new Int32Array(B).fill(-1);
  let idx = new Int32Array(0);
  user.forEach((img, i) => x.set(img, i * D));
  if (nProc > 0) {
    const b = S.data.batch(indices(seed, STREAM.run, nProc));
    x.set(b.x, user.length * D);
    labels.set(b.labels, user.length);
    idx = b.indices;
  }
  return { x, labels, shape: [B, S.size, S.size, 3], nUser: user.length, indices: idx };
}

// Independent batches for repeated measurements: (seed, stream, batch size, k) pick the images.
function freshBatch(seed, stream, B, k) {
  const b = S.data.batch(indices(seed, stream * 1000003 + B * 7919 + k, B));
  return { x: b.x, labels: b.labels, shape: [B, S.size, S.size, 3] };
}

// ---- numbers ----------------------------------------------------------------------------------
function top5(logits, K, offset = 0) {
  let max = -Infinity;
  for (let k = 0; k < K; k++) max = Math.max(max, logits[offset + k]);
  const p = new Float64Array(K);
  let sum = 0;
  for (let k = 0; k < K; k++) sum += (p[k] = Math.exp(logits[offset + k] - max));
  const idx = Array.from({ length: K }, (_, k) => k).sort((a, b) => p[b] - p[a]).slice(0, 5);
  return idx.map((k) => ({ k, p: p[k] / sum }));
}

// How far the batch statistics are from the running ones, in running standard deviations:
// dMean = mean over channels of |batch_mean - running_mean| / sqrt(running_var + eps);
// dVar  = mean over channels of |ln((batch_var + eps) / (running_var + eps))|.
function distances(batchMean, batchVar, runningMean, runningVar) {
  const C = runningMean.length;
  let dm = 0, dv = 0;
  for (let c = 0; c < C; c++) {
    const rv = Math.max(runningVar[c], 0) + EPS;
    dm += Math.abs(batchMean[c] - runningMean[c]) / Math.sqrt(rv);
    dv += Math.abs(Math.log((Math.max(batchVar[c], 0) + EPS) / rv));
  }
  return { dMean: dm / C, dVar: dv / C };
}

function argmaxAcc(logits, labels, K) {
  let right = 0, n = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) continue;
    let best = 0;
    for (let k = 1; k < K; k++) if (logits[i * K + k] > logits[i * K + best]) best = k;
    right += best === labels[i] ? 1 : 0;
    n++;
  }
  return n ? right / n : null;
}

// First few images of a batch as RGBA bytes for display: the user's images with their
// normalization (the model's mean/std) undone, procedural ones as the dataset draws them.
function thumbnails(x, n, nUser, procIndices) {
  const s = S.size, D = s * s * 3, out = [];
  const { mean, std } = imageNorm();
  for (let i = 0; i < n; i++) {
    const rgba = new Uint8ClampedArray(s * s * 4);
    const rgb = i < nUser ? null : S.data.image(procIndices[i - nUser]);
    for (let p = 0; p < s * s; p++) {
      for (let c = 0; c < 3; c++) rgba[p * 4 + c] = rgb ? rgb[p * 3 + c] : (x[i * D + p * 3 + c] * std[c] + mean[c]) * 255;
      rgba[p * 4 + 3] = 255;
    }
    out.push(rgba);
  }
  return out;
}

// ---- commands ---------------------------------------------------------------------------------
// One batch: a train-mode forward (scratch, or main when updateRunning), an eval-mode forward
// (main), the probe image alone in both modes, and the statistics of every BatchNorm layer.
function run({ mode, batchSize, layer, seed, updateRunning }) {
  const B = batchSize, K = S.main.info.numClasses;
  const { x, labels, shape, nUser, indices: procIndices } = makeBatch(seed, B);
  const T = updateRunning && mode === 'train' ? S.main : S.scratch;
  T.train();
  const [logitsTrain, msTrain] = timed(() => T.forward(x, shape));
  if (T === S.main) S.modified = true;
  T.eval();
  // every layer's batch statistics now, before the probe forwards below replace them
  const layers = S.main.info.bnLayers;
  const overview = layers.map((name, i) => {
    const b = T.bnStats(i), r = T === S.main ? b : S.main.bnStats(i);
    return { name, ...distances(b.batchMean, b.batchVar, r.runningMean, r.runningVar) };
  });
  const li = Math.max(0, layers.indexOf(layer));
  const bs = T.bnStats(li), rs = S.main.bnStats(li);
  // the eval forward of the whole batch is only needed in eval mode; in train mode it is done for
  // the timing plot when it is cheap
  let logitsEval = null, msEval = null;
  if (mode === 'eval' || msTrain < 500) [logitsEval, msEval] = timed(() => S.main.eval().forward(x, shape));
  const D = S.size * S.size * 3, probe = x.subarray(0, D), pshape = [1, S.size, S.size, 3];
  const aloneEval = S.main.forward(probe, pshape);
  const aloneTrain = S.scratch.train().forward(probe, pshape);
  S.scratch.eval();
  const thumbs = thumbnails(x, Math.min(B, 12), nUser, procIndices);
  return {
    mode, B, layer: layers[li], seed, updateRunning: T === S.main, modified: S.modified,
    channels: rs.channels,
    batchMean: bs.batchMean, batchVar: bs.batchVar, runningMean: rs.runningMean, runningVar: rs.runningVar,
    numBatchesTracked: rs.numBatchesTracked,
    layerDist: distances(bs.batchMean, bs.batchVar, rs.runningMean, rs.runningVar),
    overview,
    msTrain, msEval,
    probe: {
      fromUser: nUser > 0,
      label: labels[0] >= 0 ? labels[0] : null,
      eval: top5(aloneEval, K),
      trainBatch: top5(logitsTrain, K, 0),
      trainAlone: top5(aloneTrain, K),
    },
    accEval: logitsEval ? argmaxAcc(logitsEval, labels, K) : null,
    accTrain: argmaxAcc(logitsTrain, labels, K),
    thumbs, nUser,
  };
}

// Spread of the batch mean of one layer across K batches, for several batch sizes (train mode).
async function spread({ layer, sizes, K, seed }, progress) {
  if (!(K >= 2)) throw new Error(`bnlab: the spread needs K >= 2 batches per size (got ${K})`);
  const li = Math.max(0, S.main.info.bnLayers.indexOf(layer));
  const points = [];
  let done = 0;
  const total = sizes.reduce((a, b) => a + b, 0) * K;
  S.scratch.train();
  try {
    for (const B of sizes) {
      let C = 0, sum = null, sumSq = null, sumVar = null, ms = 0;
      for (let k = 0; k < K; k++) {
        if (S.stopRequested) throw new Error('stopped');
        const b = freshBatch(seed, STREAM.spread, B, k);
        const [, t] = timed(() => S.scratch.forward(b.x, b.shape));
        ms += t;
        const st = S.scratch.bnStats(li);
        if (!sum) { C = st.channels; sum = new Float64Array(C); sumSq = new Float64Array(C); sumVar = new Float64Array(C); }
        for (let c = 0; c < C; c++) {
          sum[c] += st.batchMean[c];
          sumSq[c] += st.batchMean[c] * st.batchMean[c];
          sumVar[c] += st.batchVar[c];
        }
        done += B;
        progress({ done, total, B, k });
        await yieldToEvents();
      }
      // per channel: std of the batch mean over the K batches, in units of the channel's spread
      // over all K*B images (pooled variance = mean within-batch variance + variance of the means)
      let acc = 0, rawAcc = 0;
      for (let c = 0; c < C; c++) {
        const m = sum[c] / K;
        const varMeans = Math.max(0, (sumSq[c] - K * m * m) / (K - 1));
        const pooled = sumVar[c] / K + varMeans * (K - 1) / K;
        acc += varMeans / (pooled + EPS);
        rawAcc += varMeans;
      }
      points.push({ B, spread: Math.sqrt(acc / C), rawStd: Math.sqrt(rawAcc / C), msPerForward: ms / K });
    }
  } finally {
    S.scratch.eval();
  }
  // c / sqrt(B) fitted in log space: log c = mean(log s + 0.5 log B)
  const c = Math.exp(points.reduce((a, p) => a + Math.log(p.spread) + 0.5 * Math.log(p.B), 0) / points.length);
  return { layer: S.main.info.bnLayers[li], K, points, c };
}

// ---- safetensors editing (PreciseBN writes new running statistics into a saved state) ---------
function f32ToF16(v) {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000, exp = ((u >>> 23) & 0xff) - 127 + 15, mant = u & 0x7fffff;
  if (((u >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = (mant | 0x800000) >>> (1 - exp);
    return sign | ((m + 0x1000 + ((m >>> 13) & 1) - 1) >>> 13);   // round to nearest even
  }
  const r = ((exp << 10) | (mant >>> 13)) + (((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) === 0x1000 && (mant >>> 13) & 1)) ? 1 : 0);
  return sign | r;
}
function f32ToBf16(v) {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff)) return (u >>> 16) | 0x40;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

// Writes `values` (length = the tensor's element count) into tensor `name` of safetensors `bytes` in place.
export function writeTensor(bytes, name, values) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const t = header[name];
  if (!t) throw new Error(`bnlab: the saved state has no tensor ${name}`);
  const count = t.shape.reduce((a, b) => a * b, 1);
  if (count !== values.length) throw new Error(`bnlab: ${name} has ${count} values, not ${values.length}`);
  const base = 8 + n + t.data_offsets[0];
  for (let i = 0; i < count; i++) {
    const v = values[i];
    switch (t.dtype) {
      case 'F32': dv.setFloat32(base + 4 * i, v, true); break;
      case 'F64': dv.setFloat64(base + 8 * i, v, true); break;
      case 'F16': dv.setUint16(base + 2 * i, f32ToF16(v), true); break;
      case 'BF16': dv.setUint16(base + 2 * i, f32ToBf16(v), true); break;
      default: throw new Error(`bnlab: cannot write ${name} of dtype ${t.dtype}`);
    }
  }
}

// PreciseBN: the running statistics of every layer replaced by exact averages over K train-mode
// batches of size B. Mean: the average of the batch means. Variance: the pooled variance of all
// K*B images = average batch variance + variance of the batch means across batches.
async function precise({ K, B, seed }, progress) {
  const layers = S.main.info.bnLayers;
  const acc = layers.map(() => null);
  const held = makeHeldOut();
  const before = evalAccuracy(held);
  S.scratch.train();
  try {
    for (let k = 0; k < K; k++) {
      if (S.stopRequested) throw new Error('stopped');
      const b = freshBatch(seed, STREAM.precise, B, k);
      S.scratch.forward(b.x, b.shape);
      layers.forEach((_, i) => {
        const st = S.scratch.bnStats(i), C = st.channels;
        const a = acc[i] || (acc[i] = { m: new Float64Array(C), m2: new Float64Array(C), v: new Float64Array(C) });
        for (let c = 0; c < C; c++) {
          a.m[c] += st.batchMean[c];
          a.m2[c] += st.batchMean[c] * st.batchMean[c];
          a.v[c] += st.batchVar[c];
        }
      });
      progress({ done: k + 1, total: K });
      await yieldToEvents();
    }
  } finally {
    S.scratch.eval();
  }
  const state = S.main.saveState();
  layers.forEach((name, i) => {
    const a = acc[i], C = a.m.length, mean = new Float32Array(C), vr = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      const m = a.m[c] / K;
      mean[c] = m;
      vr[c] = a.v[c] / K + Math.max(0, a.m2[c] / K - m * m);
    }
    writeTensor(state, `${name}.running_mean`, mean);
    writeTensor(state, `${name}.running_var`, vr);
  });
  replaceState(state);
  const after = evalAccuracy(held);
  return { K, B, before, after, heldOut: held.shape[0], ...describe() };
}

// A fixed procedural batch (never used for statistics) for before/after accuracy in eval mode.
function makeHeldOut() {
  const n = Math.min(128, Math.max(8, Math.round(2000 / Math.max(S.msPerImage, 1e-3))));   // about 2 s of eval
  return freshBatch(0, STREAM.heldOut, n, 0);
}
function evalAccuracy(h) {
  return argmaxAcc(S.main.eval().forward(h.x, h.shape), h.labels, S.main.info.numClasses);
}

// "Train here": SGD steps of `main` on procedural batches until stopped or `steps` are done.
async function train({ lr, momentum, B, steps, layer, seed }, progress) {
  const li = Math.max(0, S.main.info.bnLayers.indexOf(layer));
  const held = makeHeldOut();
  let step = 0;
  S.modified = true;
  try {
    for (; step < steps && !S.stopRequested; step++) {
      const b = freshBatch(seed, STREAM.train, B, step), shape = b.shape;
      const t = performance.now();
      const loss = S.main.step(b.x, shape, b.labels, { lr, momentum });
      const ms = performance.now() - t;
      const st = S.main.bnStats(li);
      const d = distances(st.batchMean, st.batchVar, st.runningMean, st.runningVar);
      const msg = { step: step + 1, loss, ms, ...d };
      if ((step + 1) % 10 === 0) msg.acc = evalAccuracy(held);
      progress(msg);
      await yieldToEvents();
    }
  } finally {
    S.main.eval();
    // the copy must follow the new weights
    S.scratch.dispose();
    S.scratch = S.lab.loadModel(S.main.saveState());
  }
  return { steps: step, acc: evalAccuracy(held), heldOut: held.shape[0], ...describe() };
}

const COMMANDS = {
  async init({ threads } = {}) {
    // threads: every core where the page is cross-origin isolated (the threaded build), else 1
    S.lab = await createBnLab(threads ? { threads } : {});
    return { isa: S.lab.isa, crossOriginIsolated: self.crossOriginIsolated === true, threads: S.lab.threads,
      build: S.lab.build };
  },
  async load({ bytes, name }) { return loadBytes(bytes, name); },
  async reset() {
    loadBytes(S.original, S.name);
    return describe();
  },
  async describe() { return describe(); },
  async setImages({ images, size }) {
    if (size !== S.size) throw new Error(`bnlab: images are ${size}x${size}, the model takes ${S.size}x${S.size}`);
    S.userImages = images.map((a) => new Float32Array(a));
    return { count: S.userImages.length };
  },
  async run(args) { return run(args); },
  async spread(args, progress) { return spread(args, progress); },
  async precise(args, progress) { return precise(args, progress); },
  async train(args, progress) { return train(args, progress); },
  async save() {
    const bytes = S.main.saveState();
    return { bytes, name: S.name.replace(/\.safetensors$/i, '') + (S.modified ? '-modified' : '') + '.safetensors' };
  },
};

self.onmessage = async (ev) => {
  const { id, cmd, args } = ev.data || {};
  if (cmd === 'stop') {
    S.stopRequested = true;
    return;
  }
  const fn = COMMANDS[cmd];
  if (!fn) return post({ id, ok: false, error: `bnlab: unknown worker command ${cmd}` });
  if (S.busy) return post({ id, ok: false, error: `bnlab: busy with ${S.busy}` });
  if (cmd !== 'init' && !S.lab) return post({ id, ok: false, error: 'bnlab: the worker is not initialized' });
  if (cmd !== 'init' && cmd !== 'load' && !S.main) return post({ id, ok: false, error: 'bnlab: no model is loaded' });
  S.busy = cmd;
  S.stopRequested = false;
  try {
    const result = await fn(args || {}, (p) => post({ id, progress: p }));
    const transfer = [];
    if (result && result.bytes instanceof Uint8Array) transfer.push(result.bytes.buffer);
    post({ id, ok: true, result }, transfer);
  } catch (e) {
    post({ id, ok: false, error: e && e.message ? e.message : String(e), stopped: S.stopRequested });
  } finally {
    S.busy = null;
    S.stopRequested = false;
  }
};
