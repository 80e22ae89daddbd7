// app.mjs: the demo page's wiring. Plain DOM and SVG; every computation runs in worker.mjs.
//
// The pieces: web/jobs.mjs (the worker client: one job at a time, cancel, the status line),
// web/plot.mjs (renderPlot and its hover tooltip), web/page.mjs (shared state: P, ui, settings),
// and one module per panel (panel_*.mjs). This file loads models and photos, runs batches and hands
// each result to the panels (doRun), and connects the controls. What the page shows is also exposed
// for scripts and tests as data-* attributes on the panels and as window.__bnlab.
//
// A new panel: export init*(deps) and a draw function from web/panel_<name>.mjs, call its init in
// "start" below with the deps object `panelDeps`, and its draw from doRun() (after every run) beside
// showChannel(); a panel of the shown layer is also drawn from doLayerView() (a change of the layer
// alone, whose forward stops at that layer).

import { initChannelPanel, showChannel, pickedChannel, lastChannel } from './panel_channel.mjs';
import { initAccuracyPanel, accuracyModelChanged } from './panel_accuracy.mjs';
import { initGuide } from './panel_guide.mjs';
import { initKeyboard } from './a11y.mjs';
import { drawNorm } from './panel_norm.mjs'; // issue 14: the normalization panel
import { renderPlot, COLORS } from './plot.mjs';
import { initJobs, call, post, stopJob, cancelJob, outstandingJobs, setStatus, ready, fail, showError } from './jobs.mjs';
import { $, P, debug, ui, settings, setControlsEnabled, hooks, FASHION_SPLIT, lastValidBatch, setLastValidBatch } from './page.mjs';
import { drawStats } from './panel_stats.mjs';
import { drawOverview } from './panel_overview.mjs';
import { drawProbe } from './panel_probe.mjs';
import { drawThumbs } from './panel_batch.mjs';
import { times, drawTimes } from './panel_time.mjs';
import { drawSpread, measureSpread, updateSpreadStale, clearSpread } from './panel_spread.mjs';
import { trainLog, drawTrain, trainHere } from './panel_train.mjs';
import { preciseBN } from './panel_precise.mjs';
import { renderCard, showSource } from './panel_card.mjs';
import { initCouplingPanel, couplingModelChanged } from './panel_coupling.mjs'; // issue 17 (teach): how the batch couples images
import { preciseAccModelChanged } from './panel_precise_acc.mjs'; // issue 17 (teach)

// web/serve.mjs lists this one last in models.json, after the trained demo model when it exists
const FALLBACK = { url: '/fixtures/resnet/resnet50.weights.safetensors', name: 'ResNet-50 topology, narrow test fixture (untrained)' };

let loaded = null;         // { bytes, name, file, dataset } of the loaded model, to restart a worker with it
let userFiles = [];        // the photos the user added, for the same reason
initJobs({
  debug,
  readyText: () => `ready · ${P.model ? P.model.info.bnLayers.length + ' BatchNorm layers' : 'no model'}`,
  modelModified: () => !!(P.model && P.model.modified),
  onCancel: () => { runQueued = false; fullQueued = false; clearTimeout(debounce); },
  restart: async () => {
    if (!loaded) return;
    await post('load', { bytes: loaded.bytes.slice(), name: loaded.name, file: loaded.file, dataset: loaded.dataset });
    if (userFiles.length) await post('addPhotos', { files: userFiles });
    showModel(await post('describe', {}));
  },
});

debug.renderPlot = (el, spec) => renderPlot(el, spec);   // for tests of the plotting rules

// Panels whose content no longer matches the controls are dimmed until a run redraws them.
function markStale() {
  const s = settings(), r = P.lastRun;
  const stale = !r || r.B !== s.batchSize || r.mode !== s.mode || r.seed !== s.seed || r.layer !== s.layer;
  for (const id of ['stats-panel', 'overview-panel', 'probe-panel']) {
    $(id).classList.toggle('stale', stale);
    $(id).dataset.stale = String(stale);
  }
  $('thumbs').closest('.card').classList.toggle('stale', stale);
  updateSpreadStale();
}

// ---- model ------------------------------------------------------------------------------------
function showModel(d) {
  P.model = d;
  const i = d.info;
  accuracyModelChanged(d);   // web/panel_accuracy.mjs: forget the old model's points
  couplingModelChanged();    // issue 17 (teach): web/panel_coupling.mjs forgets its swaps
  preciseAccModelChanged($, d);   // issue 17 (teach): PreciseBN's held-out accuracy cleared
  debug.model = { name: d.name, info: d.info, inputSize: `${d.inputH}x${d.inputW}`, modified: d.modified, source: d.source };
  $('model-name').textContent = d.name;
  renderCard(d);
  const notes = [];
  if (d.modified) notes.push('modified in this tab (reset restores the file)');
  if (d.info.norm === 'none') notes.push('this model has no normalization (bnlab train --norm none): its BatchNorm layers are plain per-channel scale and shift, so train and eval mode are the same function and there are no batch statistics to plot');
  if (d.name === FALLBACK.name) notes.push('the fallback fixture is untrained: its class names mean nothing (demo-models/resnet50-procedural.safetensors is not there yet)');
  $('model-note').textContent = notes.join(' · ');
  $('model-note').className = d.modified ? 'note warn' : 'note';
  showSource(d);
  // "train here" needs labels of the model's own classes: the procedural shapes and Fashion-MNIST have them
  const canTrain = d.source.kind === 'procedural' || d.source.kind === 'fashion-mnist';
  $('train-start').dataset.na = canTrain ? '' : 'photos have no labels';
  $('train-na').textContent = canTrain ? (d.source.kind === 'fashion-mnist' ? FASHION_SPLIT : '')
    : 'Train here needs labelled images of this model\'s classes; its batches are photos, which have none, so it is off for this P.model.';
  setControlsEnabled(outstandingJobs() === 0 && !P.longJob);
  // layer picker, grouped stem / layer1 / ... / layer4
  const prev = ui.layer.value;
  ui.layer.replaceChildren();
  const groups = new Map();
  i.bnLayers.forEach((name, k) => {
    const g = name.startsWith('layer') ? name.split('.')[0] : 'stem';
    if (!groups.has(g)) { const og = document.createElement('optgroup'); og.label = g; groups.set(g, og); ui.layer.appendChild(og); }
    const o = document.createElement('option');
    o.value = name;
    o.textContent = `${name} · ${d.bnChannels[k]} ch`;
    groups.get(g).appendChild(o);
  });
  ui.layer.value = i.bnLayers.includes(prev) ? prev : i.bnLayers[0];
}


async function loadModelBytes(bytes, name, file, dataset) {
  try {
    const copy = bytes.slice();
    const d = await call('load', { bytes, name, file: file || name, dataset }, { label: `loading ${name}…`, transfer: [bytes.buffer] });
    loaded = { bytes: copy, name, file: file || name, dataset };
    showModel(d);
    // the batch source the model asked for could not be had (Fashion-MNIST files missing): said beside the model
    if (d.source.error) {
      debug.errors.push(`model: ${d.source.error}`);
      showError('model', `${d.source.error}: photos are used instead`);
    }
    // keep a run near a few seconds on big models (a full ResNet-50 at 224 takes ~0.6 s per image)
    const B = settings().batchSize;
    let fit = B;
    while (fit > 1 && d.msPerImage * fit * 2 > 4000) fit >>= 1;
    // PreciseBN and the sweep: smaller defaults on slow models
    const slow = d.msPerImage * 32 * 2 > 4000;
    $('precise-k').value = slow ? '8' : '16';
    $('precise-b').value = slow ? String(Math.max(2, fit)) : '32';
    $('spread-k').value = slow ? '4' : '8';
    $('spread-max').value = slow ? '32' : '128';
    if (fit < B) {
      ui.batch.value = String(fit);
      syncSlider();
      $('model-note').textContent = `${$('model-note').textContent ? $('model-note').textContent + ' · ' : ''}` +
        `batch size lowered to ${fit}: ${d.msPerImage.toFixed(0)} ms per image here`;
    }
    P.lastRun = null;
    markStale();
    times.train.clear(); times.eval.clear();
    trainLog.length = 0;
    drawTrain();
    clearSpread();
    drawSpread();
    $('precise-readout').textContent = '';
    $('plot-precise').replaceChildren();
    $('train-readout').textContent = '';
    await doRun();
    // the sweep runs by itself when it is cheap (estimated from the batch just timed)
    // (not for models without batch statistics: GroupNorm, frozen, none have no spread to measure)
    const noBatchStats = /^(group|frozen$|none$)/.test(d.info.norm);
    if (!noBatchStats && d.msPerImage * 8 * 255 < 6000) await measureSpread();
    return true;
  } catch (e) {
    fail(`could not load ${name}`, e);
    return false;
  }
}

// ---- the model menu (data-testid="model-select"): the entries of models.json, best first ------
// The page loads the first that loads (or the one named by ?model=, a URL or a file name); choosing
// another loads it. A file loaded with "load weights…" shows as an extra entry while it is loaded.
let modelList = [];
const USER_FILE = 'user-file';
function fillModelMenu(value, userName) {
  const sel = $('model-select');
  sel.replaceChildren();
  modelList.forEach((m, k) => {
    const o = document.createElement('option');
    o.value = String(k);
    o.textContent = m.name;
    o.title = m.url;
    sel.appendChild(o);
  });
  if (userName) {
    const o = document.createElement('option');
    o.value = USER_FILE;
    o.textContent = `your file: ${userName}`;
    sel.appendChild(o);
  }
  sel.value = value;
}
async function loadListed(k) {
  const m = modelList[k];
  setStatus('busy', `fetching ${m.name}…`);
  try {
    const res = await fetch(m.url.replace(/^\//, ''));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (await loadModelBytes(bytes, m.name, m.url.replace(/^.*\//, ''), m.dataset || undefined)) {
      fillModelMenu(String(k));
      return true;
    }
  } catch (e) {
    fail(`could not fetch ${m.url}`, e);
  }
  return false;
}

async function loadDefaultModel() {
  let list = [];
  try {
    const res = await fetch('models.json');
    if (res.ok) list = await res.json();
  } catch { /* served without the manifest: try the fallback */ }
  if (!list.length) list = [FALLBACK];
  modelList = list;
  fillModelMenu('0');
  const want = new URLSearchParams(location.search).get('model');
  const first = want ? list.findIndex((m) => m.url === want || m.url.endsWith(`/${want}`) || m.url.endsWith(`/${want}.safetensors`)) : -1;
  if (want && first < 0) showError('model', `?model=${want}: no such model in models.json; the default is loaded`);
  const order = [...list.keys()];
  if (first > 0) order.unshift(...order.splice(first, 1));
  for (const k of order) if (await loadListed(k)) return true;
  return false;
}
$('model-select').addEventListener('change', async (ev) => {
  const k = Number(ev.target.value);
  if (!Number.isInteger(k) || !modelList[k]) return;
  const prev = loaded;
  if (!(await loadListed(k))) fillModelMenu(String(Math.max(0, modelList.findIndex((m) => prev && m.name === prev.name))));
});

async function loadWeightsFile(file) {
  let bytes;
  try {
    bytes = new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    return fail(`could not read ${file.name}`, e);
  }
  if (await loadModelBytes(bytes, file.name)) fillModelMenu(USER_FILE, file.name);
}

// ---- images -----------------------------------------------------------------------------------
// Photos go to the worker as Files: it decodes them, keeps them at most 512 px, and crops batches.
async function addImageFiles(files) {
  const images = files.filter((f) => !f.type || f.type.startsWith('image/') || /\.(jpe?g|png|webp|gif|bmp|avif)$/i.test(f.name));
  const ignored = files.length - images.length;
  let r;
  try {
    r = await call('addPhotos', { files: images }, { label: `busy: decoding ${images.length} photos…` });
    userFiles = userFiles.concat(images).slice(0, r.count);
    showSource(r);
    await doRun();
  } catch (e) {
    return fail('images', e, 'images');
  }
  const skipped = [...r.skipped, ...(ignored ? [`${ignored} files that are not images`] : [])];
  if (skipped.length) {
    setStatus('error', `error: skipped ${skipped.join(', ')}`);
    showError('images', `skipped ${skipped.join(', ')}`);
  }
}

// ---- one batch --------------------------------------------------------------------------------
// requestRun() asks for a run of the batch the controls describe; requestRun({ layerOnly: true }), for
// a change of the layer alone, asks only for that layer's statistics of the same batch (doLayerView:
// the forward stops at that layer) when the last run still matches the other controls. Requests made
// while one runs are merged into one; a full one wins.
let runQueued = false, runActive = false, fullQueued = false;
function requestRun({ layerOnly = false } = {}) {
  runQueued = true;
  if (!layerOnly) fullQueued = true;
  if (!runActive) pumpRuns();
}
async function pumpRuns() {
  runActive = true;
  try {
    while (runQueued) {
      runQueued = false;
      const full = fullQueued;
      fullQueued = false;
      await (full || !layerViewFits() ? doRun() : doLayerView()).catch(() => {});
    }
  } finally {
    runActive = false;
  }
}

// The last run is of this batch (size, mode, seed, update switch), and the model has batch statistics
// of plain BatchNorm (the other kinds' panels need their layer's extra statistics: a full run).
function layerViewFits() {
  const s = settings(), r = P.lastRun;
  return !!(r && r.batchMean && P.model && P.model.info.norm === 'batch' && r.B === s.batchSize && r.mode === s.mode &&
    r.seed === s.seed && r.requested && r.requested.updateRunning === s.updateRunning);
}

// One layer's statistics of the last run's batch: the worker's forward runs only up to that layer
// (layerStats: model.forwardTo, bitwise the statistics of a full forward). The rest of the run (every
// layer's distances, the probe, the times) is the same batch's and stays.
async function doLayerView() {
  const s = settings(), base = P.lastRun;
  try {
    const v = await call('layerStats', s, { label: `busy: ${s.layer}: forward up to this layer…` });
    const r = { ...base, ...v, view: 'layer' };
    P.lastRun = r;
    debug.runs++;
    debug.last = { ...debug.last, layer: r.layer, layerDist: r.layerDist, view: 'layer', ranTo: v.ranTo, layers: v.layers };
    debug.lastBatchMean = Array.from(r.batchMean);
    debug.lastStats = statsOf(r);
    debug.layerViews = (debug.layerViews || 0) + 1;
    drawStats(r);
    drawOverview(r);
    drawNorm($('norm-body'), r);
    markStale();
    ready();
    showChannel();
    return r;
  } catch (e) {
    fail('layer', e, 'batch');
    throw e;
  }
}

async function doRun() {
  if (!P.model) return;
  const s = settings();
  const t0 = performance.now();
  try {
    const r = await call('run', { ...s, channel: pickedChannel() }, { label: `busy: ${s.mode}-mode batch of ${s.batchSize}…` });
    const t1 = performance.now();
    r.roundTripMs = t1 - t0;
    r.requested = s;
    P.lastRun = r;
    debug.runs++;
    debug.last = {
      mode: r.mode, B: r.B, layer: r.layer, msTrain: r.msTrain, msEval: r.msEval, roundTripMs: r.roundTripMs, probeCached: r.probeCached,
      msBatch: r.msBatch, msChannel: r.msChannel, msProbe: r.msProbe,
      layerDist: r.layerDist, overview: r.overview.map((o) => ({ ...o })), probe: r.probe, accEval: r.accEval, accTrain: r.accTrain,
      view: 'run', ranTo: r.overview.length - 1, layers: r.overview.length,
    };
    debug.lastBatchMean = r.batchMean ? Array.from(r.batchMean) : null; // null: GroupNorm, frozen, none
    debug.lastStats = statsOf(r);
    debug.crops = r.crops;
    debug.thumbs = { source: r.source, index: r.thumbIndex, label: r.thumbLabel };
    times.train.set(r.B, r.msTrain);
    if (r.msEval != null) times.eval.set(r.B, r.msEval);
    if (r.modified && !P.model.modified) { P.model.modified = true; showModelNote(); }
    if (r.batchMean) { drawStats(r); drawOverview(r); } else {
      // GroupNorm, frozen, none: no batch statistics to set against running ones (issue 14; see the norm panel)
      $('stats-readout').textContent = `${r.layer}: this model's normalization (${P.model.info.norm}) has no batch statistics: see "This layer's normalization"`;
      $('stats-panel').dataset.run = String(debug.runs);
    }
    drawProbe(r);
    drawNorm($('norm-body'), r);
    drawTimes();
    drawThumbs(r);
    markStale();
    showChannel(r.channelView);   // computed by the run's own forward: drawn now (web/panel_channel.mjs)
    debug.last.drawMs = performance.now() - t1;   // every panel of this run drawn, the channel view included
    debug.last.channelFromRun = !!(r.channelView && lastChannel() && lastChannel().fromRun);
    ready();
    return r;
  } catch (e) {
    fail('run', e, 'batch');
    throw e;
  }
}

// The shown layer's statistics as plain arrays, for scripts and tests (null without batch statistics).
function statsOf(r) {
  if (!r.batchMean) return null;
  const a = (v) => Array.from(v);
  return { layer: r.layer, batchMean: a(r.batchMean), batchVar: a(r.batchVar), runningMean: a(r.runningMean), runningVar: a(r.runningVar) };
}

function showModelNote() {
  $('model-note').textContent = 'modified in this tab (reset restores the file)';
  $('model-note').className = 'note warn';
}
Object.assign(hooks, { requestRun, doRun, showModel });

// ---- wiring -----------------------------------------------------------------------------------
let debounce = 0;
function changed(delay = 0) {
  clearTimeout(debounce);
  debounce = setTimeout(() => { if (P.model) requestRun(); }, delay);
}

function syncSlider() {
  const B = settings().batchSize;
  ui.slider.value = String(Math.round(Math.log2(B)));
}

ui.mode.addEventListener('change', () => { markStale(); changed(); });
// the layer alone: that layer's statistics of the same batch (a forward up to it), not a whole run
ui.layer.addEventListener('change', () => { markStale(); if (P.model) requestRun({ layerOnly: true }); });
ui.update.addEventListener('change', () => {
  $('running-note').textContent = ui.update.checked
    ? 'Train-mode forwards now update the loaded model\'s running statistics (momentum 0.9), as a forgotten .eval() would. Reset restores them.'
    : 'Train-mode forwards run on a copy: the loaded model\'s running statistics are never changed.';
  $('running-note').className = ui.update.checked ? 'note warn' : 'note';
  changed();
});
ui.batch.addEventListener('change', () => {
  const raw = ui.batch.value.trim(), B = Number(raw);
  const ok = raw !== '' && Number.isInteger(B) && B >= 1 && B <= 256;
  $('batch-note').textContent = ok ? '' : `batch size: a whole number from 1 to 256 (kept ${lastValidBatch()})`;
  if (ok) setLastValidBatch(B);
  ui.batch.value = String(settings().batchSize);
  syncSlider();
  markStale();
  if (ok) changed();
});
ui.batch.addEventListener('input', () => {
  const B = Number(ui.batch.value);
  if (ui.batch.value.trim() === '' || !Number.isInteger(B) || B < 1 || B > 256) return;
  setLastValidBatch(B);
  $('batch-note').textContent = '';
  syncSlider();
  markStale();
  changed(400);
});
ui.slider.addEventListener('input', () => {
  setLastValidBatch(2 ** Number(ui.slider.value));
  ui.batch.value = String(lastValidBatch());
  $('batch-note').textContent = '';
  markStale();
  changed(150);
});
ui.seed.addEventListener('change', () => { markStale(); changed(); });
$('new-batch').addEventListener('click', () => { ui.seed.value = String((settings().seed + 1) % 65536); markStale(); changed(); });
ui.run.addEventListener('click', () => requestRun());

$('cancel').addEventListener('click', () => cancelJob());
$('spread-run').addEventListener('click', () => (P.longJob === 'spread' ? stopJob('spread') : measureSpread()));
$('spread-max').addEventListener('change', () => drawSpread());
$('train-start').addEventListener('click', () => trainHere());
$('train-stop').addEventListener('click', () => stopJob('train'));
$('precise-run').addEventListener('click', () => preciseBN());
$('reset-model').addEventListener('click', async () => {
  try {
    showModel(await call('reset', {}, { label: 'busy: reloading the original file…' }));
    $('precise-readout').textContent = '';
    await doRun();
  } catch (e) {
    fail('reset', e);
  }
});
$('save-model').addEventListener('click', async () => {
  try {
    const { bytes, name } = await call('save', {}, { label: 'busy: saving…' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    a.download = name;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    ready();
  } catch (e) {
    fail('download', e);
  }
});
$('weights-file').addEventListener('change', async (ev) => {
  const f = ev.target.files[0];
  ev.target.value = '';
  if (f) await loadWeightsFile(f);
});
$('image-files').addEventListener('change', async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = '';
  if (files.length) await addImageFiles(files);
});
$('clear-images').addEventListener('click', async () => {
  try { showSource(await call('clearPhotos', {}, { label: 'busy: clearing your photos…' })); userFiles = []; await doRun(); } catch (e) { fail('images', e, 'images'); }
});
$('image-folder').addEventListener('change', async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = '';
  if (files.length) await addImageFiles(files);
});

// drag and drop anywhere: .safetensors loads weights, images join the batch
const dz = $('dropzone');
let dragDepth = 0;
const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes('Files');
window.addEventListener('dragenter', (ev) => { if (hasFiles(ev)) { ev.preventDefault(); dragDepth++; dz.hidden = false; } });
window.addEventListener('dragover', (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
window.addEventListener('dragleave', () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) dz.hidden = true; });
window.addEventListener('drop', async (ev) => {
  if (!hasFiles(ev)) return;
  ev.preventDefault();
  dragDepth = 0;
  dz.hidden = true;
  const files = [...ev.dataTransfer.files];
  const weights = files.filter((f) => /\.safetensors$/i.test(f.name));
  const images = files.filter((f) => !/\.safetensors$/i.test(f.name));
  if ((weights.length || images.length) && P.longJob) {
    fail('drop', new Error(`wait for ${P.longJob} to finish (or stop it) before loading ${weights.length ? 'weights' : 'photos'}`), weights.length ? 'model' : 'images');
    return;
  }
  if (weights.length) await loadWeightsFile(weights[0]);
  if (images.length) await addImageFiles(images);
});

// ---- start ------------------------------------------------------------------------------------
// what every panel module may use (the channel and accuracy panels take a part of it)
const panelDeps = { $, call, renderPlot, COLORS, getRun: () => P.lastRun, getModel: () => P.model, getSeed: () => settings().seed, fail, ready };
initChannelPanel(panelDeps);
initGuide($);
initKeyboard();
initAccuracyPanel(panelDeps);
initCouplingPanel({ $, call, renderPlot, COLORS, getSettings: settings, getModel: () => P.model, fail, ready }); // issue 17 (teach)

async function start() {
  drawSpread();
  drawTrain();
  drawTimes();
  renderPlot($('plot-mean'), { height: 190, x: { type: 'lin', min: 0, max: 1 }, y: { type: 'lin', min: 0, max: 1 }, empty: 'loading the model…' });
  renderPlot($('plot-var'), { height: 190, x: { type: 'lin', min: 0, max: 1 }, y: { type: 'lin', min: 0, max: 1 }, empty: '' });
  renderPlot($('plot-overview'), { height: 196, x: { type: 'lin', min: 0, max: 1, hideTicks: true }, y: { type: 'lin', min: 0, max: 1 }, empty: '' });
  setControlsEnabled(false);
  try {
    // ?relaxed=0 loads the plain simd128 files where the relaxed-SIMD ones would run (to compare them)
    const relaxed = new URLSearchParams(location.search).get('relaxed') === '0' ? false : undefined;
    const r = await call('init', { relaxed }, { label: 'starting WebAssembly…' });
    debug.isa = r.isa;
    P.lab = { threads: r.threads, build: r.build, relaxed: r.relaxed, kernel: r.kernel };
    debug.lab = { ...r };
    if (r.photosError) debug.errors.push(`photos: ${r.photosError}`);
  } catch (e) {
    return fail('could not start bnlab.wasm', e);
  }
  setControlsEnabled(true);
  const ok = await loadDefaultModel();
  debug.ready = ok;
}
start();
