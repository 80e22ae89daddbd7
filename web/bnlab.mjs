// bnlab.mjs: the JavaScript bridge to bnlab.wasm (the C core built with -msimd128, standalone).
// One ES module, unchanged in Node 20+, browser pages and Web Workers. No Emscripten glue: we
// instantiate the module ourselves with the few imports it lists.
//
//   import { createBnLab } from './bnlab.mjs';
//   const lab = await createBnLab();                // or createBnLab({ wasmBytes })
//   const { y, mean, var: v } = lab.batchNorm.forwardTrain(x, M, C, { gamma, beta });
//
// Errors are thrown as Error with the C core's message; the instance stays usable afterwards.

import { IMAGENET_CLASSES } from './imagenet_classes.mjs';

const IS_NODE = typeof process !== 'undefined' && !!(process.versions && process.versions.node);

async function loadWasmBytes() {
  const url = new URL('./bnlab.wasm', import.meta.url);
  if (IS_NODE && url.protocol === 'file:') {
    const { readFile } = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    return readFile(fileURLToPath(url));
  }
  const res = await fetch(url);
  if (!res.ok) throw new Error(`bnlab: cannot fetch ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// Imports the standalone module may list. Anything unexpected throws when called, naming itself,
// rather than failing the instantiation.
function makeImports(module, state) {
  const known = {
    env: {
      emscripten_notify_memory_growth: () => {},   // views are re-made on every access
    },
    wasi_snapshot_preview1: {
      fd_write: (fd, iov, iovcnt, pnum) => {
        const mem = new DataView(state.memory.buffer);
        let total = 0, text = '';
        for (let i = 0; i < iovcnt; i++) {
          const ptr = mem.getUint32(iov + 8 * i, true), len = mem.getUint32(iov + 8 * i + 4, true);
          text += new TextDecoder().decode(new Uint8Array(state.memory.buffer, ptr, len));
          total += len;
        }
        if (text) (fd === 2 ? console.error : console.log)(text.replace(/\n$/, ''));
        mem.setUint32(pnum, total, true);
        return 0;
      },
      fd_close: () => 0,
      fd_seek: () => 70,   // ESPIPE: there are no files in the browser
      fd_read: () => 8,    // EBADF
      proc_exit: (code) => { throw new Error(`bnlab: wasm called exit(${code})`); },
      environ_sizes_get: (pc, ps) => { const m = new DataView(state.memory.buffer); m.setUint32(pc, 0, true); m.setUint32(ps, 0, true); return 0; },
      environ_get: () => 0,
      clock_time_get: (id, prec, out) => {
        const ns = BigInt(Math.round((typeof performance !== 'undefined' ? performance.now() : Date.now()) * 1e6));
        new DataView(state.memory.buffer).setBigUint64(out, ns, true);
        return 0;
      },
    },
  };
  const imports = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== 'function') continue;
    imports[imp.module] ??= {};
    const fn = known[imp.module] && known[imp.module][imp.name];
    imports[imp.module][imp.name] = fn || (() => { throw new Error(`bnlab: wasm import ${imp.module}.${imp.name} is not provided`); });
  }
  return imports;
}

const BN_FLAG = { cumulative: 1, unbiased: 2, noScale: 4, noBias: 8, relu: 16 };

function bnFlags(o) {
  return (o.cumulative ? BN_FLAG.cumulative : 0) | (o.unbiased ? BN_FLAG.unbiased : 0) |
    (o.useScale === false ? BN_FLAG.noScale : 0) | (o.useBias === false ? BN_FLAG.noBias : 0) |
    (o.relu ? BN_FLAG.relu : 0);
}

export const ISA = Object.freeze({ scalar: 0, avx2: 1, avx512: 2, wasmsimd: 3 });

export async function createBnLab(options = {}) {
  const bytes = options.wasmBytes || await loadWasmBytes();
  const module = await WebAssembly.compile(bytes);
  const state = { memory: null };
  const instance = await WebAssembly.instantiate(module, makeImports(module, state));
  const ex = instance.exports;
  state.memory = ex.memory;
  if (ex._initialize) ex._initialize();
  return new BnLab(ex, state);
}

class BnLab {
  constructor(ex, state) {
    this._ex = ex;
    this._state = state;
    this.batchNorm = new BatchNormOps(this);
  }

  // Loads a safetensors state dict (torchvision ResNet names; F32/F16/BF16). Throws on a bad file.
  loadModel(bytes) {
    if (!(bytes instanceof Uint8Array)) {
      if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
      else throw new Error('bnlab: loadModel expects a Uint8Array (or ArrayBuffer) holding a safetensors file');
    }
    const handle = this._scoped((alloc) => {
      const pb = alloc(bytes.length), pout = alloc(4);
      new Uint8Array(this._ex.memory.buffer, pb, bytes.length).set(bytes);
      this._check(this._ex.bnl_wasm_model_load(pb, bytes.length, pout));
      return new Uint32Array(this._ex.memory.buffer, pout, 1)[0];
    });
    return new Model(this, handle);
  }

  get isa() { return this._cstr(this._ex.bnl_wasm_isa()); }
  forceIsa(name) { this._check(this._ex.bnl_wasm_isa_force(ISA[name] ?? -1)); }
  resetIsa() { this._ex.bnl_wasm_isa_reset(); }
  // Bytes of wasm linear memory (grows, never shrinks).
  get memoryBytes() { return this._ex.memory.buffer.byteLength; }

  // ---- memory helpers (internal) --------------------------------------------------------------
  _cstr(ptr) {
    const mem = new Uint8Array(this._ex.memory.buffer);
    let end = ptr;
    while (mem[end]) end++;
    return new TextDecoder().decode(mem.subarray(ptr, end));
  }
  _check(status) {
    if (status !== 0) {
      const msg = this._cstr(this._ex.bnl_wasm_last_error()) || this._cstr(this._ex.bnl_wasm_status_str(status));
      throw new Error(`bnlab: ${msg}`);
    }
  }
  _malloc(bytes) {
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > 0xffff0000)
      throw new Error(`bnlab: cannot allocate ${bytes} bytes in wasm memory (limit 4 GiB)`);
    const p = this._ex.bnl_wasm_malloc(bytes);
    if (!p) throw new Error(`bnlab: out of memory allocating ${bytes} bytes in wasm memory`);
    return p;
  }
  _free(p) { if (p) this._ex.bnl_wasm_free(p); }
  // Runs fn(alloc) and frees every allocation made through alloc, whatever happens.
  _scoped(fn) {
    const ptrs = [];
    const alloc = (bytes) => { const p = this._malloc(bytes); ptrs.push(p); return p; };
    try {
      return fn(alloc);
    } finally {
      for (const p of ptrs) this._free(p);
    }
  }
  _f32(ptr, n) { return new Float32Array(this._ex.memory.buffer, ptr, n); }
  _putF32(alloc, arr, n, what) {
    if (arr == null) return 0;
    if (!(arr instanceof Float32Array)) {
      if (!Array.isArray(arr) && !(ArrayBuffer.isView(arr) && !(arr instanceof DataView)))
        throw new Error(`bnlab: ${what} must be a Float32Array (or an array of numbers), got ${typeof arr}`);
      arr = Float32Array.from(arr, Number);
    }
    if (arr.length !== n) throw new Error(`bnlab: ${what} has ${arr.length} values, expected ${n}`);
    const p = alloc(n * 4);
    this._f32(p, n).set(arr);
    return p;
  }
  _getF32(ptr, n) { return this._f32(ptr, n).slice(); }
}

function checkSizes(M, C) {
  if (!Number.isInteger(M) || !Number.isInteger(C) || M <= 0 || C <= 0 || M * C > 0x3fffffff)
    throw new Error(`bnlab: batchnorm sizes must be positive integers with M*C < 2^30 (got M=${M}, C=${C})`);
}

// The per-channel inputs of a BatchNorm call, copied into wasm memory with PyTorch's defaults
// (gamma 1, beta 0, running mean 0, running var 1); running statistics only when asked for.
function putChannelParams(L, alloc, o, C, running = true) {
  const ones = () => new Float32Array(C).fill(1), zeros = () => new Float32Array(C);
  const out = {
    pg: L._putF32(alloc, o.gamma ?? ones(), C, 'gamma'),
    pb: L._putF32(alloc, o.beta ?? zeros(), C, 'beta'),
  };
  if (running) {
    out.prm = L._putF32(alloc, o.runningMean ?? zeros(), C, 'runningMean');
    out.prv = L._putF32(alloc, o.runningVar ?? ones(), C, 'runningVar');
  }
  return out;
}

// BatchNorm on an NHWC activation viewed as (M = N*H*W, C). Options: gamma, beta (Float32Array C,
// default 1 and 0), eps (1e-5), momentum (0.9, Flax convention), unbiased, cumulative, relu,
// useScale, useBias, runningMean/runningVar (default 0 and 1), numBatchesTracked (0).
class BatchNormOps {
  constructor(lab) { this._lab = lab; }

  forwardTrain(x, M, C, o = {}) {
    checkSizes(M, C);
    const L = this._lab;
    return L._scoped((alloc) => {
      const px = L._putF32(alloc, x, M * C, 'x');
      const { pg, pb, prm, prv } = putChannelParams(L, alloc, o, C);
      const py = alloc(M * C * 4), pm = alloc(C * 4), pis = alloc(C * 4), pv = alloc(C * 4);
      const pn = alloc(8);
      new BigInt64Array(L._ex.memory.buffer, pn, 1)[0] = BigInt(o.numBatchesTracked ?? 0);
      L._check(L._ex.bnl_wasm_bn_forward_train(py, pm, pis, pv, prm, prv, pn, px, pg, pb, M, C,
        o.eps ?? 1e-5, o.momentum ?? 0.9, bnFlags(o)));
      return {
        y: L._getF32(py, M * C), mean: L._getF32(pm, C), var: L._getF32(pv, C), invstd: L._getF32(pis, C),
        runningMean: L._getF32(prm, C), runningVar: L._getF32(prv, C),
        numBatchesTracked: Number(new BigInt64Array(L._ex.memory.buffer, pn, 1)[0]),
      };
    });
  }

  forwardEval(x, M, C, o = {}) {
    checkSizes(M, C);
    const L = this._lab;
    return L._scoped((alloc) => {
      const px = L._putF32(alloc, x, M * C, 'x');
      const { pg, pb, prm, prv } = putChannelParams(L, alloc, o, C);
      const py = alloc(M * C * 4);
      L._check(L._ex.bnl_wasm_bn_forward_eval(py, px, pg, pb, prm, prv, M, C, o.eps ?? 1e-5, bnFlags(o)));
      return L._getF32(py, M * C);
    });
  }

  // saved: { mean, invstd } from forwardTrain.
  backwardTrain(dy, x, saved, M, C, o = {}) {
    checkSizes(M, C);
    const L = this._lab;
    return L._scoped((alloc) => {
      const pdy = L._putF32(alloc, dy, M * C, 'dy'), px = L._putF32(alloc, x, M * C, 'x');
      const pm = L._putF32(alloc, saved.mean, C, 'mean'), pis = L._putF32(alloc, saved.invstd, C, 'invstd');
      const { pg, pb } = putChannelParams(L, alloc, o, C, false);
      const pdx = alloc(M * C * 4), pdg = L._putF32(alloc, new Float32Array(C), C, 'dgamma');
      const pdb = L._putF32(alloc, new Float32Array(C), C, 'dbeta');
      L._check(L._ex.bnl_wasm_bn_backward_train(pdx, pdg, pdb, pdy, px, pm, pis, pg, pb, M, C, o.eps ?? 1e-5, bnFlags(o)));
      return { dx: L._getF32(pdx, M * C), dgamma: L._getF32(pdg, C), dbeta: L._getF32(pdb, C) };
    });
  }

  backwardEval(dy, x, M, C, o = {}) {
    checkSizes(M, C);
    const L = this._lab;
    return L._scoped((alloc) => {
      const pdy = L._putF32(alloc, dy, M * C, 'dy'), px = L._putF32(alloc, x, M * C, 'x');
      const { pg, pb, prm, prv } = putChannelParams(L, alloc, o, C);
      const pdx = alloc(M * C * 4), pdg = L._putF32(alloc, new Float32Array(C), C, 'dgamma');
      const pdb = L._putF32(alloc, new Float32Array(C), C, 'dbeta');
      L._check(L._ex.bnl_wasm_bn_backward_eval(pdx, pdg, pdb, pdy, px, pg, pb, prm, prv, M, C, o.eps ?? 1e-5, bnFlags(o)));
      return { dx: L._getF32(pdx, M * C), dgamma: L._getF32(pdg, C), dbeta: L._getF32(pdb, C) };
    });
  }
}

const I32 = (L, p, n) => new Int32Array(L._ex.memory.buffer, p, n);

// Shapes as text for messages, whatever the caller passed (JSON.stringify throws on BigInt).
const showShape = (v) => { try { return JSON.stringify(v); } catch { return String(v); } };

function checkShape(shape, what) {
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0))
    throw new Error(`bnlab: ${what}: shape must be [n, h, w, c] of positive integers (got ${showShape(shape)})`);
  const n = shape[0] * shape[1] * shape[2] * shape[3];
  if (shape[0] > 65536 || shape[1] > 8192 || shape[2] > 8192 || n > 0x3fffffff)
    throw new Error(`bnlab: ${what}: shape ${showShape(shape)} is too large`);
  return n;
}

// A loaded ResNet. Mirrors nnx: one train()/eval() switch for every BatchNorm layer.
class Model {
  constructor(lab, handle) {
    this._lab = lab;
    this._h = handle;
    this._training = false;
    const L = lab;
    this.info = L._scoped((alloc) => {
      const p = alloc(4 * 23);
      const numParams = L._ex.bnl_wasm_model_info(handle, p);
      const v = Array.from(I32(L, p, 23));
      const stages = v[0];
      const bnLayers = [];
      for (let i = 0; i < v[6]; i++) bnLayers.push(L._cstr(L._ex.bnl_wasm_model_bn_name(handle, i)));
      const info = {
        blocks: v.slice(7, 7 + stages), widths: v.slice(15, 15 + stages), block: v[1] ? 'bottleneck' : 'basic',
        stemWidth: v[2], inChannels: v[3], numClasses: v[4], numFeatures: v[5], numParams, bnLayers,
        // the C loader already refused any other value of this key
        norm: this._meta('bnlab.norm', alloc) === 'none' ? 'none' : 'batch',
      };
      Object.assign(info, this._card(alloc));
      return Object.freeze(info);
    });
  }

  // The model card (src/model/card.h): inputSize [3, H, W], mean, std, labels (names, or undefined
  // when none are known), trainData, and provenance: for each of those { from: 'file' | 'assumed',
  // why, problem? } (problem: the file's value was malformed and was ignored).
  _card(alloc) {
    const L = this._lab, p = L._ex.bnl_wasm_model_card(this._h);
    if (!p) L._check(1);
    let card;
    try { card = JSON.parse(L._cstr(p)); } finally { L._free(p); }
    const labels = card.labels === 'file' ? Object.freeze(JSON.parse(this._meta('labels', alloc)))
      : card.labels === 'imagenet' ? IMAGENET_CLASSES : undefined;
    return {
      inputSize: card.inputSize, mean: card.mean, std: card.std, labels, trainData: card.trainData,
      provenance: card.provenance,
    };
  }

  _meta(key, alloc) {
    const L = this._lab, kb = new TextEncoder().encode(key + '\0');
    const pk = alloc(kb.length);
    new Uint8Array(L._ex.memory.buffer, pk, kb.length).set(kb);
    const p = L._ex.bnl_wasm_model_meta(this._h, pk);
    return p ? L._cstr(p) : null;
  }

  _live() {
    if (!this._h) throw new Error('bnlab: this model was disposed');
    return this._h;
  }

  get training() { return this._training; }
  train() { this._lab._ex.bnl_wasm_model_set_training(this._live(), 1); this._training = true; return this; }
  eval() { this._lab._ex.bnl_wasm_model_set_training(this._live(), 0); this._training = false; return this; }

  // BatchNorm options for every layer: momentum (Flax convention, 0.9), eps, unbiased, cumulative.
  setBatchNorm({ momentum = 0.9, eps = 1e-5, unbiased = false, cumulative = false } = {}) {
    this._lab._check(this._lab._ex.bnl_wasm_model_set_bn(this._live(), momentum, eps, bnFlags({ unbiased, cumulative })));
  }

  // x: Float32Array NHWC, shape [n, h, w, c]; returns logits Float32Array [n * classes].
  forward(x, shape) {
    const h = this._live(), L = this._lab;
    const n = checkShape(shape, 'forward');
    return L._scoped((alloc) => {
      const px = L._putF32(alloc, x, n, 'input');
      const K = this.info.numClasses, pl = alloc(shape[0] * K * 4);
      L._check(L._ex.bnl_wasm_model_forward(h, pl, px, shape[0], shape[1], shape[2], shape[3]));
      return L._getF32(pl, shape[0] * K);
    });
  }

  // The statistics layer `name` (or index) used: the batch ones of the last train-mode forward
  // (biased variance; null before any) and the running ones.
  bnStats(name) {
    const h = this._live(), L = this._lab;
    const i = typeof name === 'number' ? name : this.info.bnLayers.indexOf(name);
    if (i < 0 || i >= this.info.bnLayers.length)
      throw new Error(`bnlab: no BatchNorm layer named ${JSON.stringify(name)} (see model.info.bnLayers)`);
    return L._scoped((alloc) => {
      const po = alloc(16), pp = alloc(16);
      L._check(L._ex.bnl_wasm_model_bn_stats(h, i, po, pp));
      const [C, hasBatch, lo, hi] = I32(L, po, 4);
      const ptrs = new Uint32Array(L._ex.memory.buffer, pp, 4).slice();
      return {
        layer: this.info.bnLayers[i], channels: C,
        batchMean: hasBatch ? L._getF32(ptrs[0], C) : null, batchVar: hasBatch ? L._getF32(ptrs[1], C) : null,
        runningMean: L._getF32(ptrs[2], C), runningVar: L._getF32(ptrs[3], C),
        numBatchesTracked: hi * 4294967296 + (lo >>> 0),
      };
    });
  }

  // One SGD step in train mode (softmax cross-entropy, mean over the batch). Returns the loss.
  step(x, shape, labels, { lr = 0.1, momentum = 0, weightDecay = 0, nesterov = false } = {}) {
    const h = this._live(), L = this._lab;
    const n = checkShape(shape, 'step');
    if (!labels || labels.length !== shape[0])
      throw new Error(`bnlab: step: ${labels ? labels.length : 0} labels for a batch of ${shape[0]}`);
    return L._scoped((alloc) => {
      const px = L._putF32(alloc, x, n, 'input');
      const pl = alloc(8 * shape[0]);
      const lab64 = new BigInt64Array(L._ex.memory.buffer, pl, shape[0]);
      for (let i = 0; i < shape[0]; i++) {
        const v = Number(labels[i]);
        if (!Number.isInteger(v)) throw new Error(`bnlab: step: label ${i} is not an integer (${labels[i]})`);
        lab64[i] = BigInt(v);
      }
      const ploss = alloc(4);
      L._check(L._ex.bnl_wasm_model_step(h, ploss, px, shape[0], shape[1], shape[2], shape[3], pl, lr, momentum,
        weightDecay, nesterov ? 1 : 0));
      return L._f32(ploss, 1)[0];
    });
  }

  // The whole state as safetensors bytes, in the loaded file's names and layouts.
  saveState() {
    const h = this._live(), L = this._lab;
    return L._scoped((alloc) => {
      const pb = alloc(4), pl = alloc(4);
      L._check(L._ex.bnl_wasm_model_save(h, pb, pl));
      const buf = new Uint32Array(L._ex.memory.buffer, pb, 1)[0], len = new Uint32Array(L._ex.memory.buffer, pl, 1)[0];
      const out = new Uint8Array(L._ex.memory.buffer, buf, len).slice();
      L._free(buf);
      return out;
    });
  }

  dispose() {
    if (this._h) this._lab._ex.bnl_wasm_model_free(this._h);
    this._h = 0;
  }
}

// ================================================================================================
// Procedural dataset (src/io/dataset.h through src/wasm/bridge_dataset.c): shapes drawn on demand,
// image i depending only on (seed, i), the same bytes as the native build. Used by the demo page.
//
//   const data = lab.procedural({ seed: 1, count: 10000, classes: 10, size: 64 });
//   const { x, labels } = data.batch(0, 32);   // x: Float32Array (32,64,64,3) normalized, labels: Int32Array
//   data.dispose();
// ================================================================================================
class ProceduralDataset {
  constructor(lab, handle) {
    this._lab = lab;
    this._h = handle;
    const ex = lab._ex;
    this.count = ex.bnl_wasm_dataset_size(handle);
    this.classes = ex.bnl_wasm_dataset_num_classes(handle);
    this.height = ex.bnl_wasm_dataset_height(handle);
    this.width = ex.bnl_wasm_dataset_width(handle);
    this.classNames = Array.from({ length: this.classes }, (_, i) => lab._cstr(ex.bnl_wasm_dataset_class_name(handle, i)));
  }

  _live() {
    if (!this._h) throw new Error('bnlab: this dataset was disposed');
    return this._h;
  }

  // n images from `start` on (wrapping around): { x: Float32Array (n,H,W,3) normalized with the
  // dataset's mean/std, labels: Int32Array (n) }. augment: the training augmentation drawn from `seed`.
  batch(start, n, { augment = false, seed = 0 } = {}) {
    const h = this._live(), L = this._lab;
    if (!Number.isInteger(start) || start < 0 || start > 0x7fffffff || !Number.isInteger(n) || n <= 0 || n > 65536)
      throw new Error(`bnlab: procedural batch: start = ${start}, n = ${n} (expected integers, start >= 0, 1 <= n <= 65536)`);
    const D = this.height * this.width * 3;
    return L._scoped((alloc) => {
      const px = alloc(n * D * 4), pl = alloc(n * 8);
      L._check(L._ex.bnl_wasm_dataset_batch(h, px, pl, start, n, seed, augment ? 1 : 0));
      const labels = Int32Array.from(new BigInt64Array(L._ex.memory.buffer, pl, n), Number);
      return { x: L._getF32(px, n * D), labels };
    });
  }

  // The same for explicit image indices (any order, repeats allowed).
  batchIndices(indices, { augment = false, seed = 0 } = {}) {
    const h = this._live(), L = this._lab;
    const n = indices ? indices.length : 0;
    if (n <= 0 || n > 65536) throw new Error(`bnlab: procedural batch: ${n} indices (expected 1..65536)`);
    const D = this.height * this.width * 3;
    return L._scoped((alloc) => {
      const pi = alloc(n * 4), px = alloc(n * D * 4), pl = alloc(n * 8);
      const idx = new Int32Array(L._ex.memory.buffer, pi, n);
      for (let k = 0; k < n; k++) {
        const v = Number(indices[k]);
        if (!Number.isInteger(v) || v < 0 || v >= this.count)
          throw new Error(`bnlab: procedural batch: index ${k} is ${indices[k]} (dataset of ${this.count})`);
        idx[k] = v;
      }
      L._check(L._ex.bnl_wasm_dataset_batch_indices(h, px, pl, pi, n, seed, augment ? 1 : 0));
      const labels = Int32Array.from(new BigInt64Array(L._ex.memory.buffer, pl, n), Number);
      return { x: L._getF32(px, n * D), labels };
    });
  }

  // Image i as (H,W,3) bytes, un-normalized and un-augmented (for drawing).
  image(i) {
    const h = this._live(), L = this._lab;
    const D = this.height * this.width * 3;
    return L._scoped((alloc) => {
      const p = alloc(D);
      L._check(L._ex.bnl_wasm_dataset_image(h, p, i));
      return new Uint8Array(L._ex.memory.buffer, p, D).slice();
    });
  }

  label(i) { return this._lab._ex.bnl_wasm_dataset_label(this._live(), i); }

  dispose() {
    if (this._h) this._lab._ex.bnl_wasm_dataset_free(this._h);
    this._h = 0;
  }
}

// Creates a procedural dataset: seed, count (default 10000), classes (2..16, default 10), size (>= 8, default 32).
BnLab.prototype.procedural = function procedural({ seed = 1, count = 10000, classes = 10, size = 32 } = {}) {
  if (typeof this._ex.bnl_wasm_dataset_procedural !== 'function')
    throw new Error('bnlab: this bnlab.wasm has no dataset functions (rebuild with tests/build.sh)');
  for (const [k, v] of Object.entries({ count, classes, size }))
    if (!Number.isInteger(v) || v <= 0 || v > 0x7fffffff) throw new Error(`bnlab: procedural: ${k} must be a positive integer (got ${v})`);
  if (!Number.isFinite(seed) || seed < 0) throw new Error(`bnlab: procedural: seed must be a non-negative number (got ${seed})`);
  const handle = this._scoped((alloc) => {
    const pout = alloc(4);
    this._check(this._ex.bnl_wasm_dataset_procedural(seed, count, classes, size, pout));
    return new Uint32Array(this._ex.memory.buffer, pout, 1)[0];
  });
  return new ProceduralDataset(this, handle);
};
