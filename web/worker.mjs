// worker.mjs: all of the demo page's compute, in a module Web Worker, so the page never freezes.
//
// Protocol: the page posts { id, cmd, args }; the worker answers { id, ok: true, result } or
// { id, ok: false, error }, and long jobs post { id, progress } on the way. `stop` (no id needed)
// asks the running long job (spread, precise, train) to end after its current batch.
//
// One model, two contexts: `main`, the model as the user loaded it (eval-mode forwards, and every
// running statistic the page shows), and `scratch`, a second context over the same weights and
// running statistics (model.cloneContext(): nothing is copied) that takes the train-mode forwards.
// Its train-mode forwards normalize with batch statistics and never move the shared running
// statistics, so the loaded model's running statistics stay as they were. Only "update running
// stats" (the forgotten .eval() on purpose) and "train here" run train mode on `main`; what they,
// and PreciseBN, change is seen by `scratch` at once (the same memory).
import { createBnLab } from './bnlab.mjs';
import { batchPlan, centreCrop, normalizeRGBA } from './crops.mjs';
import { batchSourceFor } from './batch_source.mjs';
import { channelView } from './channel_view.mjs';
import { preciseLayerBegin } from './precise_layer.mjs';

const EPS = 1e-5;
const DATASET_COUNT = 1 << 24;   // procedural images are drawn on demand: the count costs nothing
const MAX_USER_PHOTOS = 200;
const MAX_PHOTO_SIDE = 512;      // photos are kept at most this large (crops of 224 need no more)
const PROBE_PHOTO = 'chelsea.jpg';
// Fashion-MNIST's test split (10,000 images), as web/serve.mjs serves it; models.json's `dataset` entry
// names the URLs. The page never sees the training split, so the test split is cut in two by a fixed
// permutation: batches, the spread, PreciseBN and "train here" draw from the first 8,000; held-out
// accuracy is scored on the last 2,000, which nothing in the page ever trains on or averages over.
const FASHION_URLS = { images: '/data/fashion-mnist/t10k-images-idx3-ubyte.gz', labels: '/data/fashion-mnist/t10k-labels-idx1-ubyte.gz' };
const FASHION_HELD_OUT = 2000;

const S = {
  lab: null,
  main: null,          // the loaded model
  scratch: null,       // main.cloneContext(): train-mode forwards that leave the running stats alone
  original: null,      // bytes of the loaded file, for "reset"
  name: '',
  modified: false,     // true after train-here, PreciseBN or updating running stats
  H: 64, W: 64,        // the model's input size (its model card)
  source: null,        // batchSourceFor(model.info): { kind: 'procedural' | 'fashion-mnist' | 'photos', data, note, error }
  data: null,          // dataset adapter of the model's input size (procedural and fashion-mnist sources)
  fashion: null,       // the Fashion-MNIST test split for the model being loaded: { key, ds, perm }
  fashionLoaded: [],   // every loaded split (the live model's and S.fashion); setModel frees the others
  fashionError: null,  // why it could not be loaded, for the model the page asked for
  photos: [],          // the shipped photo pool: { bitmap, width, height, name }
  userPhotos: [],      // photos the user added, the same shape, first in the pool and the probe
  msPerImage: 0,       // one eval-mode image, measured at load
  stopRequested: false,
  busy: null,          // name of the running long job
};

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const yieldToEvents = () => new Promise((r) => setTimeout(r, 0));
const timed = (fn) => { const t = performance.now(); const r = fn(); return [r, performance.now() - t]; };

// ---- model handling ---------------------------------------------------------------------------
function describe() {
  const info = S.main.info;
  return {
    name: S.name,
    modified: S.modified,
    info: { ...info, bnLayers: [...info.bnLayers], labels: info.labels ? [...info.labels] : undefined },
    inputH: S.H, inputW: S.W,
    mean: info.mean, std: info.std,
    source: S.source,
    dataset: S.data ? S.data.describe() : null,
    photos: { shipped: S.photos.length, user: S.userPhotos.length, probe: probePhoto() ? probePhoto().name : null },
    msPerImage: S.msPerImage,
    bnChannels: info.bnLayers.map((_, i) => S.main.bnStats(i).channels),
  };
}

// Makes `main` (just loaded from `bytes`) the live model. Everything that can fail happens before
// the previous model is let go, so a failure leaves the page with the model it had.
function setModel(main, bytes, name) {
  if (main.info.inChannels !== 3) throw new Error(`bnlab: this model takes ${main.info.inChannels} input channels; the page feeds RGB images (3)`);
  const [, H, W] = main.info.inputSize;
  let source = batchSourceFor(main.info);
  const classes = Math.min(Math.max(main.info.numClasses, 2), 16);
  let scratch = null, data = null, newData = null, ms;
  if (source.kind === 'fashion-mnist') {
    // a load takes the split loadFashion just prepared (train-here and PreciseBN change the model in
    // place: they never come here)
    const f = S.fashionError ? null : S.fashion;
    data = f ? fashionAdapter(main.info, f) : null;
    let why = data ? null : S.fashionError || 'the test split was not loaded for this model';
    if (data && main.info.numClasses !== data.classes) {
      why = `the model has ${main.info.numClasses} classes, Fashion-MNIST ${data.classes}`;
      data = null;
    }
    if (why) {
      source = { kind: 'photos', data: source.data, error: `Fashion-MNIST test images: ${why}`,
        note: `trained on Fashion-MNIST, but its test images could not be loaded (${why}): photos are used instead` };
    }
  }
  try {
    scratch = main.cloneContext();
    if (source.kind === 'procedural') {
      data = S.data;
      if (!data || data.shared || data.size !== H || data.classes !== classes) data = newData = makeDataset(H, classes);
    }
    // what one image costs (eval forward; the first call also sizes the activation memory)
    const one = new Float32Array(H * W * 3), shape1 = [1, H, W, 3];
    [, ms] = timed(() => main.eval().forward(one, shape1));
    if (ms < 200) [, ms] = timed(() => main.forward(one, shape1));
  } catch (e) {
    if (scratch) scratch.dispose();
    if (newData) newData.dispose();
    throw e;
  }
  if (S.scratch) S.scratch.dispose();
  if (S.main) S.main.dispose();
  if (S.data && S.data !== data && !S.data.shared) S.data.dispose();
  // keep the live model's split and the last one loaded (switching back needs no fetch); free the rest
  const keep = (f) => f === S.fashion || (data && data.fashion === f);
  for (const f of S.fashionLoaded) if (!keep(f)) f.ds.dispose();
  S.fashionLoaded = S.fashionLoaded.filter(keep);
  Object.assign(S, { main, scratch, data, H, W, source, msPerImage: ms, original: bytes, name, modified: false });
}

async function loadBytes(bytes, name, dataset) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const main = S.lab.loadModel(bytes);   // throws on a bad file; the previous model stays
  try {
    if (batchSourceFor(main.info).kind === 'fashion-mnist') await loadFashion(main, dataset);
    setModel(main, bytes, name);
  } catch (e) {
    main.dispose();
    throw e;
  }
  return describe();
}

// ---- photos -----------------------------------------------------------------------------------
// A decoded photo, scaled down to MAX_PHOTO_SIDE on its longer side.
async function decodePhoto(blob, name) {
  let bm = await createImageBitmap(blob);
  const s = Math.min(1, MAX_PHOTO_SIDE / Math.max(bm.width, bm.height));
  if (s < 1) {
    const small = await createImageBitmap(bm, { resizeWidth: Math.max(1, Math.round(bm.width * s)),
      resizeHeight: Math.max(1, Math.round(bm.height * s)), resizeQuality: 'high' });
    bm.close();
    bm = small;
  }
  return { bitmap: bm, width: bm.width, height: bm.height, name };
}

// The shipped pool (web/photos/index.json). Without it the photo source reports a clear error.
async function loadShippedPhotos() {
  const base = new URL('./photos/', import.meta.url);
  const res = await fetch(new URL('index.json', base));
  if (!res.ok) throw new Error(`photos/index.json: HTTP ${res.status}`);
  const list = await res.json();
  const out = await Promise.all(list.map(async (e) => {
    const r = await fetch(new URL(e.file, base));
    if (!r.ok) throw new Error(`photos/${e.file}: HTTP ${r.status}`);
    return decodePhoto(await r.blob(), e.file);
  }));
  S.photos = out;
}

const pool = () => [...S.userPhotos, ...S.photos];
// The probe (image 0 of every photo batch): the user's first photo, else the cat.
const probePhoto = () => S.userPhotos[0] || S.photos.find((p) => p.name === PROBE_PHOTO) || S.photos[0] || null;

let canvas = null, ctx = null;
// Draws crops { photo, x, y, w, h, flip } at the model's size: RGBA bytes, one image after another.
function rasterize(items) {
  const H = S.H, W = S.W, n = items.length;
  if (!canvas || canvas.width !== W || canvas.height !== H) {
    canvas = new OffscreenCanvas(W, H);
    ctx = canvas.getContext('2d', { willReadFrequently: true });
  }
  const rgba = new Uint8ClampedArray(n * H * W * 4);
  items.forEach((it, i) => {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, W, H);
    ctx.setTransform(it.flip ? -1 : 1, 0, 0, 1, it.flip ? W : 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(it.photo.bitmap, it.x, it.y, it.w, it.h, 0, 0, W, H);
    rgba.set(ctx.getImageData(0, 0, W, H).data, i * H * W * 4);
  });
  return rgba;
}

function probeCrop(photo) {
  // the evaluation recipe on a square model; a non-square one gets the centre crop stretched to H x W
  const c = centreCrop(photo.width, photo.height, Math.min(S.H, S.W));
  return { photo, ...c };
}

// ---- batch sources ----------------------------------------------------------------------------
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

// Fashion-MNIST's test split at the model's input size, normalized with the model's mean/std: fetched
// and loaded once per (URLs, size, mean, std). On failure S.fashionError says why (setModel then
// falls back to photos and the page shows the error beside the model); the model still loads.
async function loadFashion(model, urls) {
  const u = { ...FASHION_URLS, ...(urls || {}) };
  const info = model.info;
  const key = JSON.stringify([u.images, u.labels, info.inputSize, info.mean, info.std]);
  S.fashionError = null;
  const have = S.fashionLoaded.find((f) => f.key === key);
  if (have) { S.fashion = have; return; }
  const base = new URL('../', import.meta.url);   // URLs in models.json are server paths
  const get = async (what, url) => {
    let res;
    try {
      res = await fetch(new URL(url.replace(/^\//, ''), base));
    } catch (e) {
      throw new Error(`${url}: ${e && e.message ? e.message : e}`);
    }
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}${res.status === 404 ? ' (install dataset-fashion-mnist, or set BNL_FASHION_MNIST for web/serve.mjs)' : ''}`);
    return new Uint8Array(await res.arrayBuffer());
  };
  try {
    const [images, labels] = await Promise.all([get('images', u.images), get('labels', u.labels)]);
    const ds = await S.lab.loadIdxDataset(images, labels, { model, fashionMnist: true,
      imagesName: u.images.replace(/^.*\//, ''), labelsName: u.labels.replace(/^.*\//, '') });
    if (ds.count <= FASHION_HELD_OUT) {
      ds.dispose();
      throw new Error(`${u.images}: ${ds.count} images, the page needs more than ${FASHION_HELD_OUT}`);
    }
    // the previous split stays until a model switch succeeds (the live model may still draw from it)
    S.fashion = { key, ds, perm: S.lab.permutation(ds.count, { seed: 20261130, epoch: 0 }) };
    S.fashionLoaded.push(S.fashion);
  } catch (e) {
    S.fashionError = e && e.message ? e.message.replace(/^bnlab: /, '') : String(e);
  }
}

// The page's view of the loaded split for a model (null when it is not loaded for this model's size):
// indices k in 0..pool-1 map to the pool part of the permutation, heldOut(n) to its last part.
function fashionAdapter(info, f) {
  const ds = f.ds, [, H] = info.inputSize;
  if (ds.height !== H || ds.width !== H) return null;
  const pool = ds.count - FASHION_HELD_OUT;
  const at = (ks) => Int32Array.from(ks, (k) => f.perm[k]);
  return {
    shared: true,   // belongs to S.fashionLoaded: setModel frees it when no model uses it
    fashion: f,
    size: H, classes: ds.classes, pool, count: ds.count,
    batch(ks) { const idx = at(ks); return { ...ds.batchIndices(idx), indices: idx }; },
    heldOut(n) {
      const idx = f.perm.slice(ds.count - Math.min(n, FASHION_HELD_OUT));
      return { ...ds.batchIndices(idx), indices: idx };
    },
    image(i) { return ds.image(i); },   // i: an index into the file (as batch() returns them)
    describe() {
      return { source: 'fashion-mnist', classes: ds.classes, size: H, names: ds.classNames, count: ds.count, pool, heldOut: FASHION_HELD_OUT };
    },
    dispose() {},
  };
}

// n image indices drawn from (seed, stream): splitmix32-style hashing, so a batch never depends on
// what was drawn before it, and a longer batch of the same (seed, stream) starts with the shorter one.
function indices(seed, stream, n) {
  const count = S.data && S.data.pool ? S.data.pool : DATASET_COUNT;   // Fashion-MNIST: its pool part
  const out = new Int32Array(n);
  for (let k = 0; k < n; k++) out[k] = (mix(seed, stream, k) >>> 0) % count;
  return out;
}
function mix(seed, stream, k) {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul((stream >>> 0) + 0x632be5ab, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16) ^ Math.imul(k + 1, 0x27d4eb2f), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}
const STREAM = { run: 1, spread: 2, precise: 3, train: 4, heldOut: 5 };

function photoItems(plan) {
  const p = pool();
  return plan.map((c) => ({ ...c, photo: p[c.photo] }));
}
function needPhotos() {
  if (!pool().length) throw new Error('bnlab: no photos to draw batches from (web/photos/ did not load; add your own)');
}
const THUMBS = 12;

// Batch `seed` of size B for the page's run. Photos: image 0 is the probe photo's evaluation crop,
// the rest random-resized crops of the pool. Procedural: the user's photos first (evaluation crops),
// then shapes. { x, labels, shape, thumbs: RGBA of the first few, thumbUser, probeName }
function makeBatch(seed, B) {
  const H = S.H, W = S.W, D = H * W * 3;
  const shape = [B, H, W, 3];
  if (S.source.kind === 'photos') {
    needPhotos();
    const items = [probeCrop(probePhoto()), ...photoItems(batchPlan(mix(seed, STREAM.run, 0), B - 1, pool()))];
    const rgba = rasterize(items);
    const user = new Set(S.userPhotos);
    return {
      x: normalizeRGBA(rgba, B * H * W, S.main.info.mean, S.main.info.std), labels: new Int32Array(B).fill(-1), shape,
      thumbs: thumbsOf(rgba, Math.min(B, THUMBS)), thumbUser: items.slice(0, THUMBS).map((it) => user.has(it.photo)),
      probeName: items[0].photo.name,
      // where the shown crops came from (for the page's tooltips and the tests)
      crops: items.slice(0, THUMBS).map((it) => ({ photo: it.photo.name, x: it.x, y: it.y, w: it.w, h: it.h, flip: !!it.flip })),
    };
  }
  const user = S.userPhotos.slice(0, B);
  const nProc = B - user.length;
  const x = new Float32Array(B * D);
  const labels = new Int32Array(B).fill(-1);
  let userRgba = new Uint8ClampedArray(0), idx = new Int32Array(0);
  if (user.length) {
    userRgba = rasterize(user.map(probeCrop));
    normalizeRGBA(userRgba, user.length * H * W, S.main.info.mean, S.main.info.std, x.subarray(0, user.length * D));
  }
  if (nProc > 0) {
    const b = S.data.batch(indices(seed, STREAM.run, nProc));
    x.set(b.x, user.length * D);
    labels.set(b.labels, user.length);
    idx = b.indices;
  }
  const thumbs = [];
  for (let i = 0; i < Math.min(B, THUMBS); i++) {
    if (i < user.length) { thumbs.push(userRgba.slice(i * H * W * 4, (i + 1) * H * W * 4)); continue; }
    const rgb = S.data.image(idx[i - user.length]), rgba = new Uint8ClampedArray(H * W * 4);
    for (let q = 0; q < H * W; q++) { rgba[q * 4] = rgb[q * 3]; rgba[q * 4 + 1] = rgb[q * 3 + 1]; rgba[q * 4 + 2] = rgb[q * 3 + 2]; rgba[q * 4 + 3] = 255; }
    thumbs.push(rgba);
  }
  return {
    x, labels, shape, thumbs, thumbUser: thumbs.map((_, i) => i < user.length),
    probeName: user.length ? user[0].name : null,
    // the shown images' indices in the dataset (-1: the user's photo) and labels, for tooltips and tests
    thumbIndex: thumbs.map((_, i) => (i < user.length ? -1 : idx[i - user.length])),
    thumbLabel: thumbs.map((_, i) => labels[i]),
  };
}

function thumbsOf(rgba, n) {
  const P = S.H * S.W * 4, out = [];
  for (let i = 0; i < n; i++) out.push(rgba.slice(i * P, (i + 1) * P));
  return out;
}

// RGBA bytes of one normalized image (the model's mean/std undone), for the coupling panel's thumbnail.
function thumbOf(x) {
  const { mean, std } = S.main.info, P = S.H * S.W, out = new Uint8ClampedArray(P * 4);
  for (let q = 0; q < P; q++) {
    for (let c = 0; c < 3; c++) out[q * 4 + c] = 255 * (x[q * 3 + c] * std[c] + mean[c]);
    out[q * 4 + 3] = 255;
  }
  return out;
}

// The coupling panel's stem view: image `image`'s H*W values of one channel of bn1's input (v: model.bnInput
// over the batch), normalized with the batch's mean and variance of that channel (train mode; float64) and
// with the running ones (eval mode).
function stemNormalized(v, B, image, run, c) {
  const x = v.values, n = x.length, P = n / B;
  let m = 0, q = 0;
  for (let i = 0; i < n; i++) m += x[i];
  m /= n;
  for (let i = 0; i < n; i++) q += (x[i] - m) * (x[i] - m);
  const sT = Math.sqrt(q / n + v.eps), sE = Math.sqrt(run.runningVar[c] + v.eps), rm = run.runningMean[c];
  const train = [], evalv = [];
  for (let i = image * P; i < (image + 1) * P; i++) { train.push((x[i] - m) / sT); evalv.push((x[i] - rm) / sE); }
  return { layer: run.layer, channel: c, side: Number.isInteger(Math.sqrt(P)) ? Math.sqrt(P) : null, train, eval: evalv, batchMean: m, batchVar: q / n,
    runningMean: rm, runningVar: run.runningVar[c] };
}

// Independent batches for repeated measurements: (seed, stream, batch size, k) pick the images.
function freshBatch(seed, stream, B, k) {
  const shape = [B, S.H, S.W, 3];
  if (S.source.kind === 'photos') {
    needPhotos();
    const rgba = rasterize(photoItems(batchPlan(mix(seed, stream * 1000003 + B, k), B, pool())));
    return { x: normalizeRGBA(rgba, B * S.H * S.W, S.main.info.mean, S.main.info.std), labels: new Int32Array(B).fill(-1), shape };
  }
  const b = S.data.batch(indices(seed, stream * 1000003 + B * 7919 + k, B));
  return { x: b.x, labels: b.labels, shape };
}

// Whether the batches carry labels the model's classes mean: procedural images or Fashion-MNIST for a
// model trained on them. Photos have none; accuracy and "train here" need them.
const labelled = () => S.source.kind === 'procedural' || S.source.kind === 'fashion-mnist';

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
  // GroupNorm, frozen and none have no batch statistics (issue 14): no distance to show
  if (!batchMean || !batchVar) return { dMean: null, dVar: null };
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

// ---- commands ---------------------------------------------------------------------------------
// One batch: a train-mode forward (scratch, or main when updateRunning), an eval-mode forward
// (main), the probe image alone in both modes, and the statistics of every BatchNorm layer.
function run({ mode, batchSize, layer, seed, updateRunning, channel }, progress = () => {}) {
  const B = batchSize, K = S.main.info.numClasses;
  const ms1 = S.msPerImage, what = `${B} images at ${S.H}×${S.W}`;
  if (S.source.kind === 'photos') progress({ phase: `cropping ${what}`, est: 2 * B });
  const [batch, msBatch] = timed(() => makeBatch(seed, B));
  const { x, labels, shape, thumbs, thumbUser, probeName, crops, thumbIndex, thumbLabel } = batch;
  const T = updateRunning && mode === 'train' ? S.main : S.scratch;
  T.train();
  progress({ phase: `train-mode forward of ${what}`, est: 1.2 * ms1 * B });
  // the channel view of the shown layer comes from this forward too (forwardBnInput: bnInput's values,
  // bit for bit), so the page need not run a second forward for it
  const li0 = Math.max(0, S.main.info.bnLayers.indexOf(layer));
  let chan = null;
  const [logitsTrain, msTrain] = timed(() => {
    if (!Number.isInteger(channel)) return T.forward(x, shape);
    const c = Math.min(Math.max(channel, 0), S.main.bnStats(li0).channels - 1);
    const r = T.forwardBnInput(x, shape, li0, c);
    chan = { c, input: r.input };
    return r.logits;
  });
  if (T === S.main) S.modified = true;
  T.eval();
  // every layer's batch statistics now, before the probe forwards below replace them
  const layers = S.main.info.bnLayers;
  const overview = layers.map((name, i) => {
    const b = T.bnStats(i), r = T === S.main ? b : S.main.bnStats(i);
    return { name, ...distances(b.batchMean, b.batchVar, r.runningMean, r.runningVar) };
  });
  const li = li0;
  const bs = T.bnStats(li), rs = S.main.bnStats(li);
  const [channelResult, msChannel] = timed(() => chan && {
    layer: layers[li], channel: chan.c, B, seed, norm: S.main.info.norm,
    ...channelView({ ...chan.input, runningMean: rs.runningMean[chan.c], runningVar: rs.runningVar[chan.c] }),
  });
  const normTrain = T.normStats(li); // issue 14: GroupNorm / Renorm / Ghost statistics of the train forward
  // the eval forward of the whole batch is only needed in eval mode; in train mode it is done for
  // the timing plot when it is cheap
  let logitsEval = null, msEval = null;
  if (mode === 'eval' || msTrain < 500) {
    progress({ phase: `eval-mode forward of ${what}`, est: (msTrain * 0.8) });
    [logitsEval, msEval] = timed(() => S.main.eval().forward(x, shape));
  }
  const norm = { kind: S.main.info.norm, train: normTrain, eval: logitsEval ? S.main.normStats(li) : null };
  const D = S.H * S.W * 3, probe = x.subarray(0, D), pshape = [1, S.H, S.W, 3];
  const [{ aloneEval, aloneTrain, aloneTrainError, cached: probeCached }, msProbe] = timed(() => probeAlone(probe, pshape, () =>
    progress({ phase: 'the probe image alone, eval and train mode', est: 2.5 * ms1 })));
  return {
    mode, B, layer: layers[li], seed, updateRunning: T === S.main, modified: S.modified,
    channels: rs.channels,
    batchMean: bs.batchMean, batchVar: bs.batchVar, runningMean: rs.runningMean, runningVar: rs.runningVar,
    numBatchesTracked: rs.numBatchesTracked,
    norm,
    layerDist: distances(bs.batchMean, bs.batchVar, rs.runningMean, rs.runningVar),
    overview,
    msTrain, msEval, probeCached, channelView: channelResult, msBatch, msChannel, msProbe,
    probe: {
      fromUser: thumbUser[0] === true, name: probeName,
      label: labels[0] >= 0 ? labels[0] : null,
      eval: top5(aloneEval, K),
      trainBatch: top5(logitsTrain, K, 0),
      trainAlone: aloneTrain ? top5(aloneTrain, K) : null, trainAloneError: aloneTrainError,
    },
    accEval: logitsEval ? argmaxAcc(logitsEval, labels, K) : null,
    accTrain: argmaxAcc(logitsTrain, labels, K),
    thumbs, thumbUser, crops: crops || null, H: S.H, W: S.W, source: S.source.kind,
    thumbIndex: thumbIndex || null, thumbLabel: thumbLabel || null,
  };
}

// The probe image alone in eval mode (main) and in train mode (the copy: its own batch statistics,
// the running ones untouched). Both depend only on the image and the model's state, so they are
// kept and reused while neither changes (the same model object, its state version, the same input
// floats): a new batch of the same model costs two single-image forwards less.
let probeMemo = null;
function probeAlone(probe, pshape, starting) {
  const m = probeMemo, version = S.main.stateVersion;
  if (m && m.main === S.main && m.scratch === S.scratch && m.version === version && m.H === pshape[1] &&
      m.W === pshape[2] && sameFloats(m.input, probe))
    return { ...m.out, cached: true };
  starting();
  const aloneEval = S.main.forward(probe, pshape);
  // BatchNorm in train mode is undefined for one image where a layer is 1x1 (small inputs): say so, no column
  let aloneTrain = null, aloneTrainError = null;
  try { aloneTrain = S.scratch.train().forward(probe, pshape); } catch (e) { aloneTrainError = e.message; }
  S.scratch.eval();
  const out = { aloneEval, aloneTrain, aloneTrainError };
  // neither forward writes the state (eval mode; the copy never updates running statistics)
  probeMemo = { main: S.main, scratch: S.scratch, version, H: pshape[1], W: pshape[2], input: probe.slice(), out };
  return { ...out, cached: false };
}

// bit for bit (NaN payloads included)
function sameFloats(a, b) {
  if (a.length !== b.length) return false;
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length), v = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < u.length; i++) if (u[i] !== v[i]) return false;
  return true;
}

// One layer's statistics for the batch `run` draws from (seed, batchSize): the copy's train-mode
// forward only up to that layer (model.forwardTo: bitwise the statistics of a full forward), and the
// loaded model's running statistics. The page asks for it when only the layer changed (the rest of
// the run still holds); ranTo is the last layer the forward ran, of `layers`.
function layerStats({ batchSize, layer, seed }, progress = () => {}) {
  const layers = S.main.info.bnLayers, li = Math.max(0, layers.indexOf(layer));
  const B = batchSize;
  progress({ phase: `train-mode forward of ${B} images up to ${layers[li]} (${li + 1} of ${layers.length} layers)`, est: 1.2 * S.msPerImage * B * (li + 1) / layers.length });
  const { x, shape } = makeBatch(seed, B);
  let bs, ms;
  try {
    [bs, ms] = timed(() => S.scratch.train().forwardTo(x, shape, li));
  } finally {
    S.scratch.eval();
  }
  const rs = S.main.bnStats(li);
  return {
    layer: layers[li], ranTo: li, layers: layers.length, msToLayer: ms, channels: rs.channels,
    batchMean: bs.batchMean, batchVar: bs.batchVar, runningMean: rs.runningMean, runningVar: rs.runningVar,
    numBatchesTracked: rs.numBatchesTracked,
    layerDist: distances(bs.batchMean, bs.batchVar, rs.runningMean, rs.runningVar),
  };
}

// Spread of the batch mean of one layer across K batches, for several batch sizes (train mode).
async function spread({ layer, sizes, K, seed }, progress) {
  if (!(K >= 2)) throw new Error(`bnlab: the spread needs K >= 2 batches per size (got ${K})`);
  const norm = S.main.info.norm;   // issue 14: GroupNorm, frozen, none have no batch statistics; Ghost needs V | B
  if (/^(group|frozen$|none$)/.test(norm)) throw new Error(`bnlab: the spread of batch statistics: this model (${norm}) has none`);
  if (norm.startsWith('ghost:')) sizes = sizes.filter((B) => B % Number(norm.slice(6)) === 0);
  const li = Math.max(0, S.main.info.bnLayers.indexOf(layer));
  // the loaded model's running statistics (copied: the distance is to what the page shows)
  const run = S.main.bnStats(li), runMean = Float32Array.from(run.runningMean), runVar = Float32Array.from(run.runningVar);
  const points = [];
  let done = 0;
  const total = sizes.reduce((a, b) => a + b, 0) * K;
  S.scratch.train();
  try {
    for (const B of sizes) {
      let C = 0, sum = null, sumSq = null, sumVar = null, ms = 0, dRun = 0;
      for (let k = 0; k < K; k++) {
        if (S.stopRequested) throw new Error('stopped');
        const b = freshBatch(seed, STREAM.spread, B, k);
        // only the layers up to the one shown run (model.forwardTo): the deeper ones cannot change it
        const [st, t] = timed(() => S.scratch.forwardTo(b.x, b.shape, li));
        ms += t;
        dRun += distances(st.batchMean, st.batchVar, runMean, runVar).dMean / K;   // |batch - running mean| / running σ
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
      // msPerForward feeds the time plot, which wants whole forwards: only a sweep of the last layer ran them
      points.push({ B, spread: Math.sqrt(acc / C), rawStd: Math.sqrt(rawAcc / C),
        msPerForward: li === S.main.info.bnLayers.length - 1 ? ms / K : null, msToLayer: ms / K, dRun });
      progress({ done, total, B, k: K, point: points[points.length - 1] });   // the page draws it now
    }
  } finally {
    S.scratch.eval();
  }
  // c / sqrt(B) fitted in log space: log c = mean(log s + 0.5 log B)
  const c = Math.exp(points.reduce((a, p) => a + Math.log(p.spread) + 0.5 * Math.log(p.B), 0) / points.length);
  return { layer: S.main.info.bnLayers[li], K, points, c };
}

// PreciseBN: the running statistics of every layer replaced by exact statistics over K train-mode
// batches of size B, computed in C (model.preciseBNBegin: one train-mode forward per batch; the
// model's own running statistics do not move until end()). Mean: the mean over all K*B images'
// activations. Variance: their pooled variance = average batch variance + variance of the batch
// means across batches (merged in float64).
// Before and after are scored on the same `heldOut` labelled images (issue 17: Fashion-MNIST's whole held-out
// part, 2,000, by default), image by image, so the page can give intervals and a paired difference.
// `layer` set: only that layer's running statistics are recomputed (preciseOneLayer).
async function precise({ K, B, seed, layer, heldOut = 2000 }, progress) {
  const n = Math.max(1, Math.min(HELD_OUT_MAX, Math.floor(heldOut) || 2000));
  const score = async (when) => {   // photos have no labels to score
    if (!labelled()) return null;
    progress({ phase: `scoring ${n} held-out images ${when}`, est: 1.1 * S.msPerImage * n });
    await yieldToEvents();
    return heldOutCorrect(n);
  };
  const correctBefore = await score('before the recompute');
  progress({ phase: `recomputing: ${K} train-mode batches of ${B}`, est: 1.2 * S.msPerImage * K * B });
  if (layer != null) {
    const one = await preciseOneLayer({ K, B, seed, layer }, progress);
    return { ...one, ...(await afterPrecise(correctBefore, score)) };
  }
  const acc = S.main.preciseBNBegin();
  try {
    for (let k = 0; k < K; k++) {
      if (S.stopRequested) throw new Error('stopped');
      const b = freshBatch(seed, STREAM.precise, B, k);
      acc.add(b.x, b.shape);
      progress({ done: k + 1, total: K });
      await yieldToEvents();
    }
    acc.end();
  } finally {
    acc.dispose();
  }
  return { K, B, ranTo: S.main.info.bnLayers.length - 1, ...(await afterPrecise(correctBefore, score)) };
}
async function afterPrecise(correctBefore, score) {
  S.modified = true;   // the scratch context shares the new statistics; saves write them
  const correctAfter = await score('after the recompute');
  const mean = (c) => (c ? c.reduce((a, v) => a + v, 0) / c.length : null);
  return { before: mean(correctBefore), after: mean(correctAfter), heldOut: correctBefore ? correctBefore.length : 0,
    correctBefore, correctAfter, ...describe() };
}

// PreciseBN of one layer (the page's "this layer only"): the same batches, each run on the copy only
// up to that layer, merged as the C PreciseBN merges (web/precise_layer.mjs); only that layer's
// running statistics change. Plain BatchNorm only, as the C one.
async function preciseOneLayer({ K, B, seed, layer }, progress) {
  const layers = S.main.info.bnLayers, li = layers.indexOf(layer);
  if (li < 0) throw new Error(`bnlab: PreciseBN: no BatchNorm layer named ${JSON.stringify(layer)}`);
  if (S.main.info.norm !== 'batch') throw new Error(`bnlab: PreciseBN needs plain BatchNorm (this model: ${S.main.info.norm})`);
  const acc = preciseLayerBegin(S.main.bnStats(li).channels);
  S.scratch.train();
  try {
    for (let k = 0; k < K; k++) {
      if (S.stopRequested) throw new Error('stopped');
      const b = freshBatch(seed, STREAM.precise, B, k);
      acc.add(S.scratch.forwardTo(b.x, b.shape, li), b.shape[0]);
      progress({ done: k + 1, total: K });
      await yieldToEvents();
    }
  } finally {
    S.scratch.eval();
  }
  S.main.setRunningStats(li, acc.end());
  return { K, B, layer: layers[li], ranTo: li };
}

// 1 or 0 per held-out image: eval mode's top class is its label. Fashion-MNIST: the first n of its held-out
// part (at most 2,000); otherwise n procedural images of the held-out stream. Forwards of at most 250 images.
const HELD_OUT_MAX = 4000, HELD_OUT_CHUNK = 250;
function heldOutCorrect(n) {
  const K = S.main.info.numClasses, D = S.H * S.W * 3, out = [];
  const fashion = S.data && S.data.heldOut ? S.data.heldOut(n) : null;
  if (fashion) n = fashion.labels.length;
  S.main.eval();
  for (let j = 0; j * HELD_OUT_CHUNK < n; j++) {
    const m = Math.min(HELD_OUT_CHUNK, n - j * HELD_OUT_CHUNK);
    const b = fashion ? { x: fashion.x.subarray(j * HELD_OUT_CHUNK * D, (j * HELD_OUT_CHUNK + m) * D), labels: fashion.labels.subarray(j * HELD_OUT_CHUNK, j * HELD_OUT_CHUNK + m) }
      : freshBatch(0, STREAM.heldOut, m, 1000 + j);
    const logits = S.main.forward(b.x, [m, S.H, S.W, 3]);
    for (let i = 0; i < m; i++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (logits[i * K + k] > logits[i * K + best]) best = k;
      out.push(best === b.labels[i] ? 1 : 0);
    }
  }
  return out;
}

// A fixed labelled batch (never used for statistics) for before/after accuracy in eval mode.
function makeHeldOut() {
  const n = Math.min(128, Math.max(8, Math.round(2000 / Math.max(S.msPerImage, 1e-3))));   // about 2 s of eval
  if (S.data && S.data.heldOut) {   // Fashion-MNIST: its held-out part, never drawn for batches
    const b = S.data.heldOut(n);
    return { x: b.x, labels: b.labels, shape: [b.labels.length, S.H, S.W, 3] };
  }
  return freshBatch(0, STREAM.heldOut, n, 0);
}
function evalAccuracy(h) {
  return argmaxAcc(S.main.eval().forward(h.x, h.shape), h.labels, S.main.info.numClasses);
}

// "Train here": SGD steps of `main` on procedural batches until stopped or `steps` are done.
async function train({ lr, momentum, B, steps, layer, seed }, progress) {
  if (!labelled()) throw new Error(`bnlab: train here needs labelled images of this model's classes; its batches are photos, which have none`);
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
    S.main.eval();   // the scratch context shares the new weights: nothing to copy
  }
  return { steps: step, acc: evalAccuracy(held), heldOut: held.shape[0], ...describe() };
}

const COMMANDS = {
  async init({ threads, relaxed } = {}) {
    // threads: every core where the page is cross-origin isolated (the threaded build), else 1;
    // relaxed: false for the plain simd128 files (the page's ?relaxed=0), else the engine decides
    S.lab = await createBnLab({ ...(threads ? { threads } : {}), ...(relaxed === false ? { relaxed } : {}) });
    let photosError = null;
    try { await loadShippedPhotos(); } catch (e) { photosError = e.message; }
    return {
      isa: S.lab.isa, crossOriginIsolated: self.crossOriginIsolated === true,
      threads: S.lab.threads, build: S.lab.build, relaxed: S.lab.relaxed, kernel: S.lab.kernel,
      photos: S.photos.length, photosError,
    };
  },
  async load({ bytes, name, file, dataset }) {
    const d = await loadBytes(bytes, name, dataset);
    S.file = file || name;
    S.datasetUrls = dataset || null;
    return d;
  },
  async reset() {
    await loadBytes(S.original, S.name, S.datasetUrls);
    return describe();
  },
  async describe() { return describe(); },
  // Photos the user added (Blobs/Files): decoded here, scaled to at most 512 px, added to the pool.
  async addPhotos({ files }) {
    const skipped = [];
    for (const f of files) {
      const name = f.name || 'image';
      if (S.userPhotos.length >= MAX_USER_PHOTOS) { skipped.push(`${name} (at most ${MAX_USER_PHOTOS} photos)`); continue; }
      try {
        S.userPhotos.push(await decodePhoto(f, name));
      } catch {
        skipped.push(`${name} (not an image this browser can decode)`);
      }
    }
    return { count: S.userPhotos.length, skipped, ...describe() };
  },
  async clearPhotos() {
    for (const p of S.userPhotos) p.bitmap.close();
    S.userPhotos = [];
    return describe();
  },
  async run(args, progress) { return run(args, progress); },
  async layerStats(args, progress) { return layerStats(args, progress); },
  async spread(args, progress) { return spread(args, progress); },
  async precise(args, progress) { return precise(args, progress); },
  async train(args, progress) { return train(args, progress); },
  // One channel of one layer over the run's batch (same seed and size): its values before BatchNorm
  // (model.bnInput on the copy, train mode) normalized both ways (web/channel_view.mjs).
  async channel({ seed, batchSize, layer, channel }) {
    const li = Math.max(0, S.main.info.bnLayers.indexOf(layer)), b = makeBatch(seed, batchSize);
    let r;
    try { r = S.scratch.train().bnInput(b.x, b.shape, li, channel); } finally { S.scratch.eval(); }
    const run = S.main.bnStats(li);
    return { layer: S.main.info.bnLayers[li], channel, B: batchSize, seed, norm: S.main.info.norm,
      ...channelView({ ...r, runningMean: run.runningMean[channel], runningVar: run.runningVar[channel] }) };
  },
  // issue 17, "how the batch couples images" (web/panel_coupling.mjs): image `image` of the run's batch with
  // the other images replaced by batch `swap` of their own stream (swap 0: the run's batch as it is), scored
  // in train mode (the copy) and eval mode (main); only the chosen image's logits and input checksum return.
  // Also the kept image's values of channel `channel` at the stem (bn1) after normalizing, both ways (the stem's
  // input is the image's own convolution, the same in both modes; deeper, eval mode's input is not at hand).
  async couple({ seed, batchSize, image, swap, channel = 0 }) {
    const B = batchSize, D = S.H * S.W * 3, K = S.main.info.numClasses, b = makeBatch(seed, B);
    if (!(Number.isInteger(image) && image >= 0 && image < B)) throw new Error(`bnlab: couple: image ${image} is not in the batch of ${B}`);
    if (swap > 0) {
      const o = freshBatch(seed, 6, B, swap);   // stream 6: the swaps (STREAM has 1..5)
      for (let j = 0; j < B; j++) if (j !== image) b.x.set(o.x.subarray(j * D, (j + 1) * D), j * D);
    }
    let lt, v;
    const c = Math.min(Math.max(0, Math.floor(channel) || 0), S.main.bnStats(0).channels - 1);
    // the stem view is BatchNorm's formula: other kinds (GroupNorm, Renorm, Ghost, frozen, none) normalize otherwise
    const plainBN = S.main.info.norm === 'batch';
    try {
      lt = S.scratch.train().forward(b.x, b.shape);
      if (plainBN) v = S.scratch.bnInput(b.x, b.shape, 0, c);
    } finally { S.scratch.eval(); }
    const stem = plainBN ? stemNormalized(v, B, image, S.main.bnStats(0), c) : null;
    const le = S.main.eval().forward(b.x, b.shape), mine = b.x.subarray(image * D, (image + 1) * D);
    let sum = 0, others = 0;
    for (let q = 0; q < D; q++) sum += mine[q];
    for (let q = 0; q < B * D; q++) others += b.x[q];
    return { seed, B, image, swap, train: Array.from(lt.subarray(image * K, (image + 1) * K)),
      eval: Array.from(le.subarray(image * K, (image + 1) * K)), inputSum: sum, batchSum: others - sum,
      label: b.labels[image] >= 0 ? b.labels[image] : null, thumb: thumbOf(mine), H: S.H, W: S.W, stem };
  },
  async save() {
    const bytes = S.main.saveState();
    // the loaded file's own name (not the page's description of the default model), no spaces
    const base = (S.file || S.name).replace(/^.*[\\/]/, '').replace(/\.safetensors$/i, '').replace(/[^\w.+-]+/g, '_') || 'model';
    return { bytes, name: base + (S.modified ? '-modified' : '') + '.safetensors' };
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
