// bnlab.mjs: the JavaScript bridge to bnlab.wasm (the C core built with -msimd128, standalone).
// One ES module, unchanged in Node 20+, browser pages and Web Workers. The single-thread build has
// no Emscripten glue: we instantiate it ourselves with the few imports it lists. The threaded build
// (threads/bnlab-threads.{js,wasm,worker.js}: the same core on pthreads over one shared memory)
// comes with Emscripten's CommonJS glue, which starts its workers (README: wasm threads).
//
//   import { createBnLab } from './bnlab.mjs';
//   const lab = await createBnLab();                // or createBnLab({ wasmBytes, threads })
//   lab.threads, lab.build;                         // 4, 'simd-threads' (or 1, 'simd')
//   lab.relaxed, lab.kernel;                        // true, 'gemm_4x8__wasmrelaxed' (relaxed SIMD FMA)
//   const { y, mean, var: v } = lab.batchNorm.forwardTrain(x, M, C, { gamma, beta });
//
// Errors are thrown as Error with the C core's message; the instance stays usable afterwards.

import { IMAGENET_CLASSES } from './imagenet_classes.mjs';

const IS_NODE = typeof process !== 'undefined' && !!(process.versions && process.versions.node);

// A module holding one f32x4.relaxed_madd (final encoding 0xfd 0x85 0x02): whether this engine runs
// relaxed SIMD (Chromium by default; Node 20 with --experimental-wasm-relaxed-simd).
const RELAXED_PROBE = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b,   // type: (v128 v128 v128) -> v128
  0x03, 0x02, 0x01, 0x00,                                       // one function of that type
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfd, 0x85, 0x02, 0x0b]);

export function relaxedSimdSupported() {
  try {
    return WebAssembly.validate(RELAXED_PROBE);
  } catch {
    return false;
  }
}

async function loadWasmBytes(relaxed) {
  const url = new URL(relaxed ? './bnlab-relaxed.wasm' : './bnlab.wasm', import.meta.url);
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

// Shared memory can be used here: Node, or a cross-origin-isolated page's worker (a page's main
// thread may not wait on other threads).
function canShareMemory() {
  if (typeof SharedArrayBuffer === 'undefined' || typeof Atomics === 'undefined') return false;
  if (IS_NODE) return true;
  const inWorker = typeof WorkerGlobalScope !== 'undefined' && typeof self !== 'undefined' && self instanceof WorkerGlobalScope;
  return inWorker && globalThis.crossOriginIsolated === true;
}

async function defaultThreads() {
  if (!canShareMemory()) return 1;
  if (IS_NODE) {
    const os = await import('node:os');
    return os.availableParallelism ? os.availableParallelism() : os.cpus().length;
  }
  return (typeof navigator !== 'undefined' && navigator.hardwareConcurrency) || 1;
}

async function readUrl(url) {
  if (IS_NODE && url.protocol === 'file:') {
    const { readFile } = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    return new Uint8Array(await readFile(fileURLToPath(url)));
  }
  const res = await fetch(url);
  if (!res.ok) throw new Error(`bnlab: cannot fetch ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

const MAX_THREADS = 64;   // src/core/parallel.c's pool limit

// The threaded build on `threads` threads: the caller plus threads - 1 pthreads, started before
// this resolves (Emscripten's PTHREAD_POOL_SIZE, read from bnlPoolSize).
async function loadThreaded(threads, options, relaxed) {
  const base = new URL('./threads/', import.meta.url);
  const stem = relaxed ? 'bnlab-threads-relaxed' : 'bnlab-threads';
  let factory;
  if (IS_NODE && base.protocol === 'file:') {
    const { createRequire } = await import('node:module');
    factory = createRequire(import.meta.url)(`./threads/${stem}.js`);
  } else {
    // a classic script: evaluated here (module workers have no importScripts); its pthread
    // workers load it again by URL
    const text = new TextDecoder().decode(await readUrl(new URL(`${stem}.js`, base)));
    factory = new Function(`${text}\nreturn bnlabThreads;`)();
  }
  const wasmBinary = options.threadsWasmBytes || await readUrl(new URL(`${stem}.wasm`, base));
  const state = { memory: null, failed: null };
  const nodeFiles = IS_NODE && base.protocol === 'file:';
  const where = (path) => (nodeFiles ? decodeURIComponent(new URL(path, base).pathname) : new URL(path, base).href);
  let loadFailed;
  const failedToLoad = new Promise((_, reject) => { loadFailed = reject; });
  // A worker that fails marks the lab failed (a call waiting on it is unwound to JS by Emscripten,
  // and throws); while loading, it fails createBnLab. Idle workers do not keep Node alive.
  const watch = (PThread) => {
    for (const w of [...PThread.unusedWorkers, ...PThread.runningWorkers]) {
      w.onerror = (e) => {
        state.failed ??= `a worker thread failed (${e && e.message ? e.message : e})`;
        loadFailed(new Error(`bnlab: ${state.failed}`));
      };
    }
  };
  const opts = {
    // at least one worker: with none, Emscripten 3.1.6's glue never finishes loading
    wasmBinary, bnlPoolSize: Math.max(1, threads - 1),
    mainScriptUrlOrBlob: where(`${stem}.js`), locateFile: where,
    print: (t) => console.log(t), printErr: (t) => console.error(t),
    // instantiated here so that the workers are watched from the moment they get the module
    instantiateWasm: (info, receive) => {
      WebAssembly.instantiate(wasmBinary, info).then(({ instance, module }) => {
        receive(instance, module);
        watch(opts.PThread);   // the options object is the glue's Module
      }, (e) => loadFailed(new Error(`bnlab: cannot instantiate the threaded build: ${e.message}`)));
      return {};
    },
  };
  const M = await Promise.race([factory(opts), failedToLoad]);
  for (const w of [...M.PThread.unusedWorkers, ...M.PThread.runningWorkers]) if (typeof w.unref === 'function') w.unref();
  const ex = {};
  Object.defineProperty(ex, 'memory', { get: () => M.wasmMemory });
  for (const key of Object.keys(M)) {
    if (!key.startsWith('_bnl_wasm_') || typeof M[key] !== 'function') continue;
    const fn = M[key];
    ex[key.slice(1)] = (...args) => {
      if (state.failed) throw new Error(`bnlab: ${state.failed}; this lab cannot be used any more, create a new one`);
      try {
        return fn(...args);
      } catch (e) {
        // a trap, or Emscripten unwinding the caller after a worker crashed
        state.failed ??= `a thread failed (${e && e.message ? e.message : e})`;
        throw new Error(`bnlab: ${state.failed}; this lab cannot be used any more, create a new one`);
      }
    };
  }
  state.memory = M.wasmMemory;
  const got = ex.bnl_wasm_set_threads(threads);
  return new BnLab(ex, state, { threads: got, build: 'simd-threads', terminate: () => M.PThread.terminateAllThreads() });
}

// options.threads: 1 = the single-thread build (bnlab.wasm); N > 1 = the threaded build on N
// threads. Default: every core where shared memory is allowed (Node; a cross-origin-isolated
// page's worker), else 1; and 1 when only options.wasmBytes (a single-thread module) is given.
// options.build ('simd' | 'simd-threads') picks the build explicitly (tests: the threaded build on
// one thread); options.threadsWasmBytes: the threaded build's module bytes.
// options.relaxed: true = the relaxed-SIMD files (bnlab-relaxed.wasm, threads/bnlab-threads-relaxed.*:
// the GEMM kernel's multiply-add is f32x4.relaxed_madd, an FMA where the CPU has one), false = the
// plain ones; default: relaxed where the engine runs relaxed SIMD, falling back to the plain files
// if the relaxed ones cannot be loaded. Given bytes are used as they are (lab.relaxed says which).
export async function createBnLab(options = {}) {
  // the options first: a bad one is an Error whatever the files
  let threads = options.threads;
  if (threads === undefined) threads = options.wasmBytes && !options.threadsWasmBytes ? 1 : await defaultThreads();
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)
    throw new Error(`bnlab: threads must be an integer from 1 to ${MAX_THREADS} (got ${showShape(threads)})`);
  const build = options.build ?? (threads > 1 ? 'simd-threads' : 'simd');
  if (build !== 'simd' && build !== 'simd-threads')
    throw new Error(`bnlab: build must be 'simd' or 'simd-threads' (got ${showShape(build)})`);
  if (build === 'simd' && threads > 1) throw new Error(`bnlab: the 'simd' build runs one thread (asked for ${threads})`);
  if (build === 'simd-threads' && !canShareMemory())
    throw new Error('bnlab: threads > 1 needs shared memory: Node, or a Web Worker of a cross-origin-isolated page');
  if (options.relaxed !== undefined && typeof options.relaxed !== 'boolean')
    throw new Error(`bnlab: relaxed must be true or false (got ${showShape(options.relaxed)})`);
  const relaxedOk = relaxedSimdSupported();
  if (options.relaxed === true && !relaxedOk)
    throw new Error('bnlab: this engine does not run relaxed SIMD (Node 20: --experimental-wasm-relaxed-simd; Chromium 114+ runs it)');
  const plan = { threads, build };
  if (options.relaxed === undefined && relaxedOk) {
    try {
      return await createWith(options, plan, true);
    } catch (e) {
      console.warn(`bnlab: the relaxed-SIMD build did not load (${e.message}); using the plain simd128 build`);
    }
    return createWith(options, plan, false);
  }
  return createWith(options, plan, options.relaxed ?? false);
}

// Loads the files the checked options asked for (relaxed: the *-relaxed ones).
async function createWith(options, { threads, build }, relaxed) {
  if (build === 'simd-threads') {
    if (options.threads !== undefined || options.build !== undefined) return loadThreaded(threads, options, relaxed);
    // threads by default: the single-thread build is the fallback when the threaded one cannot start
    try {
      return await loadThreaded(threads, options, relaxed);
    } catch (e) {
      console.warn(`bnlab: the threaded build did not start (${e.message}); using the single-thread build`);
    }
    threads = 1;
  }
  const bytes = options.wasmBytes || await loadWasmBytes(relaxed);
  const module = await WebAssembly.compile(bytes);
  const state = { memory: null };
  const instance = await WebAssembly.instantiate(module, makeImports(module, state));
  const ex = instance.exports;
  state.memory = ex.memory;
  if (ex._initialize) ex._initialize();
  return new BnLab(ex, state, { threads: 1, build: 'simd' });
}

class BnLab {
  constructor(ex, state, { threads, build, terminate = null }) {
    this._ex = ex;
    this._state = state;
    this._terminate = terminate;
    this.batchNorm = new BatchNormOps(this);
    this.threads = threads;   // threads the parallel loops run on
    this.build = build;       // 'simd' (bnlab.wasm) or 'simd-threads' (threads/bnlab-threads.wasm)
    this.kernel = this._cstr(ex.bnl_wasm_gemm_kernel());   // the GEMM micro-kernel the module runs
    this.relaxed = this.kernel.endsWith('__wasmrelaxed');  // the relaxed-SIMD files (FMA)
  }

  // The threaded build: ends its workers, and the lab is unusable afterwards (no-op for the
  // single-thread build, whose memory goes with the lab).
  terminate() {
    if (!this._terminate) return;
    this._state.failed ??= 'this lab was terminated';
    this._terminate();
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
      this._check(this._ex.bnl_wasm_model_load(pout, pb, bytes.length));
      return new Uint32Array(this._ex.memory.buffer, pout, 1)[0];
    });
    return new Model(this, handle);
  }

  get isa() { return this._cstr(this._ex.bnl_wasm_isa()); }
  forceIsa(name) { this._check(this._ex.bnl_wasm_isa_force(ISA[name] ?? -1)); }
  resetIsa() { this._ex.bnl_wasm_isa_reset(); }
  // Bytes of wasm linear memory (grows, never shrinks).
  get memoryBytes() { return this._ex.memory.buffer.byteLength; }

  // ---- datasets (the classes below) ----------------------------------------------------------
  // Creates a procedural dataset: seed, count (default 10000), classes (2..16, default 10), size (>= 8, default 32).
  procedural({ seed = 1, count = 10000, classes = 10, size = 32 } = {}) {
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
  }

  // A permutation of 0..n-1 drawn from (seed, epoch): Int32Array, the same as the native
  // bnl_dataset_permutation (bnlab train's epoch order, and its --train-size/--val-size subsets: the
  // first N of the permutation with seed = --data-seed and epoch 1 for training, 2 for validation).
  permutation(n, { seed = 0, epoch = 0 } = {}) {
    if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new Error(`bnlab: permutation: n = ${n} (expected an integer >= 0)`);
    if (!Number.isFinite(seed) || seed < 0 || !Number.isInteger(epoch) || epoch < 0)
      throw new Error(`bnlab: permutation: seed ${seed}, epoch ${epoch} (expected non-negative numbers)`);
    return this._scoped((alloc) => {
      const p = alloc(Math.max(n, 1) * 4);
      this._check(this._ex.bnl_wasm_dataset_permutation(p, n, seed, epoch));
      return new Int32Array(this._ex.memory.buffer, p, n).slice();
    });
  }

  // Loads an IDX dataset from the two files' bytes (async: gzip'd bytes are inflated first).
  // Options: model (its info.inputSize, mean and std set size/mean/std), size (S: 0 = the files' own),
  // mean, std (3 numbers each; default: the model's, else the data's own), fashionMnist (Fashion-MNIST's
  // class names; labels must be 0..9), classNames (names to show instead), imagesName, labelsName (for
  // messages).
  async loadIdxDataset(images, labels, options = {}) {
    if (typeof this._ex.bnl_wasm_dataset_idx !== 'function')
      throw new Error('bnlab: this bnlab.wasm has no IDX dataset functions (rebuild with tests/build.sh)');
    const { model = null, fashionMnist = false, classNames = null, imagesName = 'images file', labelsName = 'labels file' } = options;
    let ib = asBytes(images, 'images'), lb = asBytes(labels, 'labels');
    let size = options.size ?? 0;
    let mean = triple(options.mean, 'mean'), std = triple(options.std, 'std');
    if (model) {
      const info = model.info || {};
      const is = info.inputSize;
      if (options.size == null && Array.isArray(is) && is.length === 3) {
        if (is[1] !== is[2]) throw new Error(`bnlab: loadIdxDataset: the model's input_size ${JSON.stringify(is)} is not square`);
        size = is[1];
      }
      if (!mean && info.mean) mean = triple(info.mean, "the model's mean");
      if (!std && info.std) std = triple(info.std, "the model's std");
    }
    if (!Number.isInteger(size) || size < 0 || size > 4096)
      throw new Error(`bnlab: loadIdxDataset: size must be an integer 0..4096 (got ${size})`);
    if (std && std.some((v) => !(v > 0))) throw new Error(`bnlab: loadIdxDataset: std must be > 0 (got ${JSON.stringify(std)})`);
    if (GZIP(ib)) ib = await gunzipBytes(ib, imagesName);
    if (GZIP(lb)) lb = await gunzipBytes(lb, labelsName);
    const handle = this._scoped((alloc) => {
      const pi = alloc(Math.max(ib.length, 1)), pl = alloc(Math.max(lb.length, 1)), pout = alloc(4);
      new Uint8Array(this._ex.memory.buffer, pi, ib.length).set(ib);
      new Uint8Array(this._ex.memory.buffer, pl, lb.length).set(lb);
      const st = this._ex.bnl_wasm_dataset_idx(pi, ib.length, pl, lb.length, size, fashionMnist ? 1 : 0, pout);
      if (st !== 0) {
        // the core names its buffers "IDX images" / "IDX labels": say which of the caller's files
        const msg = this._cstr(this._ex.bnl_wasm_last_error()).replace('IDX images', imagesName).replace('IDX labels', labelsName);
        throw new Error(`bnlab: ${msg}`);
      }
      return new Uint32Array(this._ex.memory.buffer, pout, 1)[0];
    });
    try {
      if (mean || std) {
        this._scoped((alloc) => {
          const p = alloc(24), cur = alloc(24);
          this._check(this._ex.bnl_wasm_dataset_norm(handle, cur, 0));
          const c = Array.from(this._f32(cur, 6));
          this._f32(p, 6).set([...(mean || c.slice(0, 3)), ...(std || c.slice(3, 6))]);
          this._check(this._ex.bnl_wasm_dataset_norm(handle, p, 1));
        });
      }
      const classes = this._ex.bnl_wasm_dataset_num_classes(handle);
      let names = null;
      if (classNames != null) {
        if (!Array.isArray(classNames) || classNames.length < classes)
          throw new Error(`bnlab: loadIdxDataset: classNames must be an array of at least ${classes} names`);
        names = classNames.slice(0, classes).map(String);
      }
      return new IdxDataset(this, handle, names);
    } catch (e) {
      this._ex.bnl_wasm_dataset_free(handle);
      throw e;
    }
  }

  // ---- memory helpers (internal) --------------------------------------------------------------
  _cstr(ptr) {
    const mem = new Uint8Array(this._ex.memory.buffer);
    let end = ptr;
    while (mem[end]) end++;
    return new TextDecoder().decode(mem.slice(ptr, end));   // a copy: TextDecoder refuses shared memory
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
    const L = lab;
    // the architecture and the normalization kind as the C side holds them (bnl_wasm_model_describe)
    this.info = L._scoped((alloc) => {
      const { numBn, ...arch } = this._json(L._ex.bnl_wasm_model_describe(handle));
      const bnLayers = Array.from({ length: numBn }, (_, i) => L._cstr(L._ex.bnl_wasm_model_bn_name(handle, i)));
      const info = { ...arch, bnLayers };
      Object.assign(info, this._card(alloc));
      return Object.freeze(info);
    });
  }

  // A malloc'd JSON string from the bridge, parsed and freed (0: the bridge's error is thrown).
  _json(p) {
    const L = this._lab;
    if (!p) L._check(1);
    try { return JSON.parse(L._cstr(p)); } finally { L._free(p); }
  }

  // The model card (src/model/card.h): inputSize [3, H, W], mean, std, labels (names, or undefined
  // when none are known), trainData, and provenance: for each of those { from: 'file' | 'assumed',
  // why, problem? } (problem: the file's value was malformed and was ignored).
  _card(alloc) {
    const L = this._lab, card = this._json(L._ex.bnl_wasm_model_card(this._h));
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

  // read from the C side, which owns the switch (no JS mirror to drift from it)
  get training() { return this._lab._ex.bnl_wasm_model_training(this._live()) !== 0; }
  // Changes whenever the weights or running statistics may have changed (through this handle or
  // any clone of it: steps, train-mode forwards that update the running statistics, PreciseBN,
  // setRunningStats, loads), and only then: equal versions, same outputs for the same input.
  get stateVersion() { return this._lab._ex.bnl_wasm_model_state_version(this._live()); }
  train() { this._lab._ex.bnl_wasm_model_set_training(this._live(), 1); return this; }
  eval() { this._lab._ex.bnl_wasm_model_set_training(this._live(), 0); return this; }

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

  // Train mode: the forward only up to BatchNorm layer `layer` (name or index), for a view of that
  // layer; returns its bnStats(). Every layer up to it gets exactly the statistics (and running
  // statistics update) a full forward gives; later layers keep what an earlier forward left.
  forwardTo(x, shape, layer) {
    const h = this._live(), L = this._lab;
    const i = this._bnIndex(layer);
    const n = checkShape(shape, 'forwardTo');
    L._scoped((alloc) => {
      const px = L._putF32(alloc, x, n, 'input');
      L._check(L._ex.bnl_wasm_model_forward_to(h, px, shape[0], shape[1], shape[2], shape[3], i));
    });
    return this.bnStats(i);
  }

  // Train mode: the forward up to the input of BatchNorm layer `layer` (name or index; earlier layers
  // as in forwardTo, `layer` itself does not run); returns channel `channel` of that input, the
  // convolution's output before BatchNorm: { values: Float32Array of N*H*W values (image-major),
  // gamma, beta (that channel's), eps (the layers') }.
  bnInput(x, shape, layer, channel) { return this._bnInputCall('bnInput', x, shape, layer, channel, false).input; }

  // Train mode: a whole forward that also returns what bnInput(x, shape, layer, channel) gives, bit
  // for bit: { logits, input: { values, gamma, beta, eps } }, one forward instead of two.
  forwardBnInput(x, shape, layer, channel) { return this._bnInputCall('forwardBnInput', x, shape, layer, channel, true); }

  // bnInput (forward up to the layer) or forwardBnInput (whole forward, logits too): one channel of
  // the layer's input with its gamma, beta and eps.
  _bnInputCall(who, x, shape, layer, channel, whole) {
    const h = this._live(), L = this._lab;
    const i = this._bnIndex(layer);
    const n = checkShape(shape, who);
    if (!Number.isInteger(channel)) throw new Error(`bnlab: ${who}: channel must be an integer, got ${showShape(channel)}`);
    return L._scoped((alloc) => {
      const px = L._putF32(alloc, x, n, 'input');
      const capOut = shape[0] * shape[1] * shape[2];   // every layer's N*H*W is at most the input's
      const po = alloc(4 * capOut), pn = alloc(4), pg = alloc(12);
      const K = this.info.numClasses, pl = whole ? alloc(shape[0] * K * 4) : 0;
      const [N, H, W, C] = shape;
      L._check(whole ? L._ex.bnl_wasm_model_forward_bn_input(h, pl, po, capOut, pn, pg, px, N, H, W, C, i, channel)
        : L._ex.bnl_wasm_model_bn_input(h, po, capOut, pn, pg, px, N, H, W, C, i, channel));
      const [gamma, beta, eps] = L._getF32(pg, 3);
      const input = { values: L._getF32(po, I32(L, pn, 1)[0]), gamma, beta, eps };
      return whole ? { logits: L._getF32(pl, shape[0] * K), input } : { input };
    });
  }

  _bnIndex(name) {
    const i = typeof name === 'number' ? name : this.info.bnLayers.indexOf(name);
    if (!Number.isInteger(i) || i < 0 || i >= this.info.bnLayers.length)
      throw new Error(`bnlab: no BatchNorm layer named ${showShape(name)} (see model.info.bnLayers)`);
    return i;
  }

  // The statistics layer `name` (or index) used: the batch ones of the last train-mode forward
  // (biased variance; null before any) and the running ones.
  bnStats(name) {
    const h = this._live(), L = this._lab;
    const i = this._bnIndex(name);
    return L._scoped((alloc) => {
      const po = alloc(16), pp = alloc(16);
      L._check(L._ex.bnl_wasm_model_bn_stats(h, po, pp, i));
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

  // Replaces layer `name`'s (or index's) running statistics: { mean, variance } of `channels` values
  // each (Float32Array or arrays of numbers), finite, variance >= 0. Throws (nothing changes) on a
  // wrong count, a bad value, or a kind without running statistics (none, group).
  setRunningStats(name, { mean, variance } = {}) {
    const h = this._live(), L = this._lab;
    const i = this._bnIndex(name);
    const C = this.bnStats(i).channels;
    if (mean == null || variance == null) throw new Error('bnlab: setRunningStats needs { mean, variance }');
    L._scoped((alloc) => {
      const pm = L._putF32(alloc, mean, C, `${this.info.bnLayers[i]} mean`);
      const pv = L._putF32(alloc, variance, C, `${this.info.bnLayers[i]} variance`);
      L._check(L._ex.bnl_wasm_model_set_running_stats(h, i, pm, pv, C));
    });
  }

  // PreciseBN: every layer's running statistics become the exact mean and pooled (biased) variance
  // of the activations of all the batches taken together (one train-mode forward per batch; the
  // running statistics, parameters and train/eval switch do not move until the end). Batches may
  // differ in N, not in H x W. Plain BatchNorm only.
  //   model.preciseBN([{ x, shape }, ...])           all at once, or
  //   const acc = model.preciseBNBegin(); acc.add(x, shape) ...; acc.end(); (end or dispose frees it)
  preciseBN(batches) {
    if (!batches || typeof batches[Symbol.iterator] !== 'function')
      throw new Error('bnlab: preciseBN needs an array of { x, shape } batches');
    const acc = this.preciseBNBegin();
    try {
      for (const b of batches) {
        if (!b || typeof b !== 'object') throw new Error('bnlab: preciseBN: each batch must be { x, shape }');
        acc.add(b.x, b.shape);
      }
      acc.end();
    } finally {
      acc.dispose();
    }
  }

  preciseBNBegin() {
    const h = this._live(), L = this._lab;
    const ptr = L._scoped((alloc) => {
      const po = alloc(4);
      L._check(L._ex.bnl_wasm_precise_begin(po, h));
      return new Uint32Array(L._ex.memory.buffer, po, 1)[0];
    });
    const model = this;
    let p = ptr, batches = 0;
    const live = () => { if (!p) throw new Error('bnlab: this PreciseBN accumulation has ended'); model._live(); return p; };
    return {
      get batches() { return batches; },
      add(x, shape) {
        const a = live(), n = checkShape(shape, 'preciseBN');
        L._scoped((alloc) => {
          const px = L._putF32(alloc, x, n, 'input');
          L._check(L._ex.bnl_wasm_precise_add(a, h, px, shape[0], shape[1], shape[2], shape[3]));
        });
        batches++;
      },
      end() {
        const a = live();
        try { L._check(L._ex.bnl_wasm_precise_end(a, h)); } finally { this.dispose(); }
      },
      dispose() { if (p) L._ex.bnl_wasm_precise_free(p), p = 0; },
    };
  }

  // What a GroupNorm, Renorm or Ghost layer computed in the last forward beyond BatchNorm's statistics,
  // or null (another kind, or no forward yet: train mode for renorm/ghost, either mode for group):
  //   group:  { kind, images, groups, groupMean, groupVar }   (Float32Array images*groups, row-major)
  //   renorm: { kind, channels, r, d }                        (Float32Array channels; r, d as used in training)
  //   ghost:  { kind, virtualBatches, channels, virtualMean, virtualVar }   (virtualBatches*channels)
  normStats(name) {
    const h = this._live(), L = this._lab;
    const i = typeof name === 'number' ? name : this.info.bnLayers.indexOf(name);
    if (i < 0 || i >= this.info.bnLayers.length)
      throw new Error(`bnlab: no normalization layer named ${JSON.stringify(name)} (see model.info.bnLayers)`);
    const kind = this.info.norm.split(':')[0];
    if (kind !== 'group' && kind !== 'renorm' && kind !== 'ghost') return null;
    return L._scoped((alloc) => {
      const po = alloc(8), pp = alloc(8);
      if (L._ex.bnl_wasm_model_norm_stats(h, po, pp, i) !== 0) return null;   // nothing has run yet
      const [rows, cols] = I32(L, po, 2);
      const ptrs = new Uint32Array(L._ex.memory.buffer, pp, 2).slice();
      const a = L._getF32(ptrs[0], rows * cols), b = L._getF32(ptrs[1], rows * cols);
      const layer = this.info.bnLayers[i];
      if (kind === 'group') return { layer, kind, images: rows, groups: cols, groupMean: a, groupVar: b };
      if (kind === 'renorm') return { layer, kind, channels: cols, r: a, d: b };
      return { layer, kind, virtualBatches: rows, channels: cols, virtualMean: a, virtualVar: b };
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

  // A second context over this model's state (bnl_resnet_clone_context): the same weights and
  // running statistics in memory (not a copy: an update through either is seen by both), its own
  // train/eval switch (eval to start), batch statistics and buffers. Its train-mode forwards use
  // batch statistics as usual but never move the shared running statistics. Dispose each one;
  // the weights go with the last.
  cloneContext() {
    const L = this._lab, h = this._live();
    const handle = L._scoped((alloc) => {
      const pout = alloc(4);
      L._check(L._ex.bnl_wasm_model_clone_context(pout, h));
      return new Uint32Array(L._ex.memory.buffer, pout, 1)[0];
    });
    return new Model(L, handle);
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
    this._what = 'procedural';   // for messages
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
      throw new Error(`bnlab: ${this._what} batch: start = ${start}, n = ${n} (expected integers, start >= 0, 1 <= n <= 65536)`);
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
    if (n <= 0 || n > 65536) throw new Error(`bnlab: ${this._what} batch: ${n} indices (expected 1..65536)`);
    const D = this.height * this.width * 3;
    return L._scoped((alloc) => {
      const pi = alloc(n * 4), px = alloc(n * D * 4), pl = alloc(n * 8);
      const idx = new Int32Array(L._ex.memory.buffer, pi, n);
      for (let k = 0; k < n; k++) {
        const v = Number(indices[k]);
        if (!Number.isInteger(v) || v < 0 || v >= this.count)
          throw new Error(`bnlab: ${this._what} batch: index ${k} is ${indices[k]} (dataset of ${this.count})`);
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


// ================================================================================================
// IDX datasets (MNIST, Fashion-MNIST; src/io/dataset_idx.c): the images and labels files' bytes,
// gzip'd or plain. Gzip'd bytes are inflated here with DecompressionStream (Node 18+, browsers): the
// wasm build has no zlib. Gray images come out as 3 equal channels at the model's input size
// (28 native, up to 32 zero-padded, larger resized), normalized with the model's mean/std.
//
//   const fetchBytes = async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer());
//   const data = await lab.loadIdxDataset(await fetchBytes('/data/fashion-mnist/t10k-images-idx3-ubyte.gz'),
//                                         await fetchBytes('/data/fashion-mnist/t10k-labels-idx1-ubyte.gz'),
//                                         { model, fashionMnist: true });
//   const { x, labels, indices } = data.randomBatch(32, { seed: 7 });   // x: (32,S,S,3) for model.forward
//   data.classNames[labels[0]];   // "Ankle boot"
// ================================================================================================
const GZIP = (b) => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

async function gunzipBytes(bytes, name) {
  if (typeof DecompressionStream !== 'function')
    throw new Error(`bnlab: ${name}: gzip'd, and this runtime has no DecompressionStream: pass the decompressed bytes`);
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (e) {
    throw new Error(`bnlab: ${name}: corrupt or truncated gzip data (${e && e.message ? e.message : e})`);
  }
}

function asBytes(b, what) {
  if (b instanceof Uint8Array) return b;
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  throw new Error(`bnlab: loadIdxDataset: ${what} must be a Uint8Array or ArrayBuffer (the file's bytes)`);
}

function triple(v, what) {
  if (v == null) return null;
  const a = Array.from(v, Number);
  if (a.length !== 3 || a.some((t) => !Number.isFinite(t)))
    throw new Error(`bnlab: loadIdxDataset: ${what} must be 3 finite numbers (got ${JSON.stringify(v)})`);
  return a;
}

class IdxDataset extends ProceduralDataset {
  constructor(lab, handle, classNames) {
    super(lab, handle);
    this._what = 'IDX';
    if (classNames) this.classNames = classNames;
    const norm = lab._scoped((alloc) => {
      const p = alloc(24);
      lab._check(lab._ex.bnl_wasm_dataset_norm(handle, p, 0));
      return Array.from(lab._f32(p, 6));
    });
    this.mean = norm.slice(0, 3);   // the normalization every batch uses
    this.std = norm.slice(3, 6);
  }

  // n images in the order of a permutation drawn from `seed` (the same as the native build's
  // bnl_dataset_permutation(seed, epoch)), from position `start` on: { x, labels, indices }.
  randomBatch(n, { seed = 0, epoch = 0, start = 0, augment = false } = {}) {
    const L = this._lab, N = this.count;
    this._live();
    if (!Number.isInteger(n) || n <= 0 || n > N || !Number.isInteger(start) || start < 0 || start + n > N)
      throw new Error(`bnlab: IDX randomBatch: n = ${n}, start = ${start} (expected 1 <= n, start + n <= ${N})`);
    if (!Number.isFinite(seed) || seed < 0 || !Number.isInteger(epoch) || epoch < 0)
      throw new Error(`bnlab: IDX randomBatch: seed ${seed}, epoch ${epoch} (expected non-negative numbers)`);
    const perm = L.permutation(N, { seed, epoch }).slice(start, start + n);
    return { ...this.batchIndices(perm, { augment, seed }), indices: perm };
  }
}


