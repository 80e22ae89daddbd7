// app.mjs: the demo page. Plain DOM and SVG; every computation runs in worker.mjs.
//
// The page asks the worker for one thing at a time (a queue), except `stop`, which goes straight
// through. What it shows is also exposed for scripts and tests as data-* attributes on the panels
// and as window.__bnlab.

import { initChannelPanel, showChannel } from './panel_channel.mjs';
import { initAccuracyPanel, accuracyModelChanged } from './panel_accuracy.mjs';
import { initGuide } from './panel_guide.mjs';
import { initKeyboard } from './a11y.mjs';
import { drawNorm } from './panel_norm.mjs'; // issue 14: the normalization panel
import { initCouplingPanel, couplingModelChanged } from './panel_coupling.mjs'; // issue 17 (teach): how the batch couples images
import { preciseHeldOutN, preciseAccModelChanged, drawPreciseAccuracy } from './panel_precise_acc.mjs'; // issue 17 (teach)

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';
// web/serve.mjs lists this one last in models.json, after the trained demo model when it exists
const FALLBACK = { url: '/fixtures/resnet/resnet50.weights.safetensors', name: 'ResNet-50 topology, narrow test fixture (untrained)' };
// Fashion-MNIST models: the page has the test split only (web/worker.mjs cuts it in two)
const FASHION_SPLIT = 'The page has only the 10,000 test images: batches, the spread, PreciseBN and "train here" use 8,000 of them; held-out accuracy is scored on the other 2,000.';
const heldOutKind = () => (model && model.source.kind === 'fashion-mnist' ? 'Fashion-MNIST test' : 'procedural');

const debug = (window.__bnlab = { ready: false, runs: 0, last: null, spread: null, model: null, train: [], precise: null, times: {}, errors: [] });

// ---- worker client ----------------------------------------------------------------------------
// One worker at a time. "cancel" asks a long job (spread, PreciseBN, train) to stop after its current
// batch; one that does not within a second and a half, and any other job (one forward cannot be
// interrupted), is ended by terminating the worker, and a new one is started with the same model file
// and photos. Jobs queued behind it wait for that restart.
let worker = null;
const pending = new Map();
let nextId = 1;
let queue = Promise.resolve();
let outstanding = 0;
let workerReady = Promise.resolve();
let generation = 0;        // bumped by every cancel
let current = null;        // the job the worker is running: { id, label, t0, est, phase }
let loaded = null;         // { bytes, name, file } of the loaded model, to restart a worker with it
let userFiles = [];        // the photos the user added, for the same reason

function startWorker() {
  worker = new Worker(new URL('./worker.mjs', import.meta.url), { type: 'module' });
  worker.onmessage = (ev) => {
    const { id, ok, result, error, progress } = ev.data;
    const p = pending.get(id);
    if (!p) return;
    if (progress !== undefined) return p.onProgress && p.onProgress(progress);
    pending.delete(id);
    if (ok) p.resolve(result);
    else p.reject(Object.assign(new Error(error), { stopped: !!ev.data.stopped }));
  };
  worker.onerror = (ev) => {
    ev.preventDefault();
    setStatus('error', `error: the worker failed: ${ev.message || 'could not start (is bnlab.wasm built?)'}`);
  };
}
startWorker();

// Posts straight to the worker (no queue): used by the queue and by a restart.
function post(cmd, args, { onProgress, transfer } = {}) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, cmd, args }, transfer || []);
  });
}

// Sends one command after the previous ones have finished. `label` is shown in the status line,
// with the time it has taken (and the estimate, when the job gives one) while it runs.
function call(cmd, args, { label, onProgress, transfer } = {}) {
  outstanding++;
  const gen = generation;
  const job = queue.then(async () => {
    await workerReady;
    // a cancel drops what was queued before it, not only the running job
    if (gen !== generation) throw Object.assign(new Error('cancelled'), { cancelled: true });
    const me = { label: label || `busy: ${cmd}…`, t0: performance.now(), est: 0, phase: null, cmd };
    current = me;
    if (label) setStatus('busy', label);
    showBusy();
    try {
      return await post(cmd, args, {
        transfer,
        onProgress: (p) => {
          if (p && p.phase) { me.phase = p.phase; me.est = p.est || 0; me.phaseT0 = performance.now(); showBusy(); }
          if (onProgress) onProgress(p);
        },
      });
    } finally {
      if (current === me) current = null;
      showBusy();
    }
  });
  const settle = () => { outstanding--; };
  queue = job.then(settle, settle);
  return job;
}
const stopWorker = () => worker.postMessage({ cmd: 'stop' });

// The busy line: what runs, for how long, against its estimate; the cancel button while it runs.
let busyTimer = 0;
function showBusy() {
  const btn = $('cancel'), bar = $('busy-bar');
  if (!current) {
    clearInterval(busyTimer);
    busyTimer = 0;
    btn.hidden = true;
    bar.hidden = true;
    return;
  }
  btn.hidden = false;
  btn.disabled = false;
  if (!busyTimer) busyTimer = setInterval(showBusy, 250);
  const t = (performance.now() - current.t0) / 1000;
  if (current.phase) {
    const pt = (performance.now() - (current.phaseT0 || current.t0)) / 1000;
    setStatus('busy', `busy: ${current.phase} · ${pt.toFixed(1)} s${current.est ? ` of ~${(current.est / 1000).toFixed(1)} s` : ''}`);
    bar.hidden = !current.est;
    if (current.est) bar.value = Math.min(0.99, (pt * 1000) / current.est);
  } else if (t > 1 && statusEl.dataset.state === 'busy') {
    statusEl.textContent = `${current.label.replace(/ · [\d.]+ s$/, '')} · ${t.toFixed(1)} s`;
  }
}

// Jobs that check for `stop` between their batches; the others are one uninterruptible computation.
const STOPPABLE = new Set(['spread', 'precise', 'train']);
async function cancelJob() {
  const job = current;
  if (!job) return;
  $('cancel').disabled = true;
  generation++;
  runQueued = false;   // and the batch requested while this one ran
  clearTimeout(debounce);
  if (STOPPABLE.has(job.cmd)) {
    stopWorker();
    await new Promise((r) => setTimeout(r, 1500));
    if (current !== job) return;   // it stopped by itself
  }
  worker.terminate();
  for (const p of pending.values()) p.reject(Object.assign(new Error('cancelled'), { cancelled: true }));
  pending.clear();
  current = null;
  showBusy();
  const lost = model && model.modified;
  startWorker();
  workerReady = (async () => {
    setStatus('busy', 'cancelled: restarting WebAssembly…');
    await post('init', {});
    if (loaded) {
      const d = await post('load', { bytes: loaded.bytes.slice(), name: loaded.name, file: loaded.file, dataset: loaded.dataset });
      if (userFiles.length) await post('addPhotos', { files: userFiles });
      showModel(await post('describe', {}));
      void d;
    }
  })();
  try {
    await workerReady;
    setStatus('ready', `ready · cancelled ${job.cmd === 'run' ? 'the batch' : job.cmd}${lost ? ' (the model was reloaded from its file: changes made in this tab are gone)' : ''}`);
    debug.cancelled = (debug.cancelled || 0) + 1;
  } catch (e) {
    fail('restart after cancel', e);
  }
}

// ---- status -----------------------------------------------------------------------------------
const statusEl = $('status') || document.querySelector('[data-testid="status"]');
function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
  statusEl.title = text;
}
function ready() {
  if (outstanding === 0) setStatus('ready', `ready · ${model ? model.info.bnLayers.length + ' BatchNorm layers' : 'no model'}`);
}
// An error shows in the status line and, until dismissed, beside the control that caused it
// (where: 'model', 'batch', 'images', 'spread', 'train', 'precise'): a later job's "ready" does not
// hide it, and it is in view where the user acted.
function fail(what, e, where = 'model') {
  if (e && e.cancelled) return;   // cancelJob says what happened
  const msg = e && e.message ? e.message : String(e);
  debug.errors.push(`${what}: ${msg}`);
  setStatus('error', `error: ${what}: ${msg}`);
  showError(where, `${what}: ${msg}`);
}
function showError(where, text) {
  const box = $(`err-${where}`) || $('err-model');
  const line = document.createElement('div');
  line.className = 'error-line';
  const t = document.createElement('span');
  t.textContent = text;
  const x = document.createElement('button');
  x.type = 'button';
  x.className = 'dismiss';
  x.textContent = '×';
  x.title = x.ariaLabel = 'dismiss this error';
  x.addEventListener('click', () => { line.remove(); box.hidden = !box.children.length; });
  line.append(t, x);
  box.append(line);
  box.hidden = false;
}

// ---- small SVG plotting -----------------------------------------------------------------------
function el(tag, attrs = {}, parent) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function niceStep(span, n) {
  const raw = span / Math.max(1, n), p = 10 ** Math.floor(Math.log10(raw)), f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}
function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  if (a >= 100) return v.toFixed(0);
  return String(Number(v.toPrecision(3)));
}

// An axis: type 'lin' or 'log', domain [min, max] (padded and made nice here), and the pixel range.
function makeScale(spec, r0, r1) {
  let { min, max } = spec;
  if (!(Number.isFinite(min) && Number.isFinite(max))) { min = 0; max = 1; }
  if (spec.type === 'log') {
    min = Math.max(min, 1e-12);
    max = Math.max(max, min * 1.0001);
    let l0 = Math.log10(min), l1 = Math.log10(max);
    if (!spec.exact) { const pad = Math.max((l1 - l0) * 0.06, 0.05); l0 -= pad; l1 += pad; }
    // at least 0.6 decades, so that the 1-2-5 ticks give two labels even for a single point
    if (!spec.ticks && l1 - l0 < 0.6) { const c = (l0 + l1) / 2; l0 = c - 0.3; l1 = c + 0.3; }
    const f = (v) => r0 + ((Math.log10(Math.max(v, 1e-30)) - l0) / (l1 - l0)) * (r1 - r0);
    let ticks = spec.ticks;
    if (!ticks) {
      ticks = [];
      const span = l1 - l0;
      const mult = span < 1.2 ? [1, 2, 5] : span < 2.5 ? [1, 3] : [1];
      for (let e = Math.floor(l0); e <= Math.ceil(l1); e++) for (const m of mult) ticks.push(m * 10 ** e);
      ticks = ticks.filter((t) => Math.log10(t) >= l0 - 1e-9 && Math.log10(t) <= l1 + 1e-9);
      if (span > 6) ticks = ticks.filter((t, i) => i % 2 === 0);
    }
    return { f, ticks, lo: 10 ** l0, hi: 10 ** l1 };
  }
  if (max - min < 1e-12) { const c = min; min = c - (Math.abs(c) || 1) * 0.5; max = c + (Math.abs(c) || 1) * 0.5; }
  if (!spec.exact) { const pad = (max - min) * 0.06; if (spec.min !== 0 || min < 0) min -= pad; max += pad; }
  const step = spec.integer ? Math.max(1, niceStep(max - min, spec.nticks || 5)) : niceStep(max - min, spec.nticks || 5);
  const ticks = spec.ticks || [];
  if (!spec.ticks) for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-6; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  const f = (v) => r0 + ((v - min) / (max - min)) * (r1 - r0);
  return { f, ticks, lo: min, hi: max };
}

// renderPlot(container, { width, height, x, y, series, legend, vlines, empty, data })
//   series: { kind: 'line'|'dots'|'bars', points: [[x, y], ...], color, width, r, dash, opacity, hollow,
//             barWidth (x units), onClick(i), highlight (index) }
//   bands: [{ from, to, label }] shaded x ranges labelled under the axis (the stages of the network)
// The SVG is drawn at the container's pixel width (text stays at its size) and redrawn on resize.
const drawn = new Map();
const resizer = new ResizeObserver((entries) => {
  for (const e of entries) {
    const d = drawn.get(e.target);
    if (d && Math.abs(e.target.clientWidth - d.width) > 1) renderPlot(e.target, d.spec);
  }
});
function renderPlot(container, spec) {
  const W = Math.max(200, container.clientWidth || spec.width || 480), H = spec.height || 200;
  if (!drawn.has(container)) resizer.observe(container);
  drawn.set(container, { spec, width: W });
  const m = { l: 48, r: 12, t: spec.legend ? 24 : 10, b: spec.x.label ? 32 : 20, ...(spec.margin || {}) };
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': spec.title || plotSummary(spec) });
  const X = makeScale(spec.x, m.l, W - m.r), Y = makeScale(spec.y, H - m.b, m.t);
  // grid and ticks
  for (const t of Y.ticks) {
    const py = Y.f(t);
    if (py < m.t - 0.5 || py > H - m.b + 0.5) continue;
    el('line', { x1: m.l, x2: W - m.r, y1: py, y2: py, class: 'gridline' }, svg);
    el('text', { x: m.l - 5, y: py + 3.5, 'text-anchor': 'end', class: 'tick' }, svg).textContent = (spec.y.format || fmt)(t);
  }
  if (!spec.x.hideTicks) {
    for (const t of X.ticks) {
      const px = X.f(t);
      if (px < m.l - 0.5 || px > W - m.r + 0.5) continue;
      el('line', { x1: px, x2: px, y1: H - m.b, y2: H - m.b + 4, class: 'axis' }, svg);
      el('text', { x: px, y: H - m.b + 14, 'text-anchor': 'middle', class: 'tick' }, svg).textContent = (spec.x.format || fmt)(t);
    }
  }
  el('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis' }, svg);
  el('line', { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'axis' }, svg);
  if (spec.x.label) el('text', { x: (m.l + W - m.r) / 2, y: H - 3, 'text-anchor': 'middle', class: 'label' }, svg).textContent = spec.x.label;
  if (spec.y.label) el('text', { x: 11, y: (m.t + H - m.b) / 2, transform: `rotate(-90 11 ${(m.t + H - m.b) / 2})`, 'text-anchor': 'middle', class: 'label' }, svg).textContent = spec.y.label;
  (spec.bands || []).forEach((b, i) => {
    const x0 = X.f(b.from), x1 = X.f(b.to);
    if (i % 2 === 1) el('rect', { x: x0, y: m.t, width: x1 - x0, height: H - m.t - m.b, fill: '#f3f5f9' }, svg);
    if (b.label && x1 - x0 > b.label.length * 5.5) el('text', { x: (x0 + x1) / 2, y: H - m.b + 13, 'text-anchor': 'middle', class: 'tick' }, svg).textContent = b.label;
  });
  const clipId = `clip${Math.random().toString(36).slice(2)}`;
  el('rect', { x: m.l, y: m.t - 2, width: W - m.l - m.r, height: H - m.t - m.b + 4 }, el('clipPath', { id: clipId }, svg));
  const body = el('g', { 'clip-path': `url(#${clipId})` }, svg);
  const cy = (v) => Math.max(-1e4, Math.min(1e4, Y.f(v)));
  const hoverPts = [];   // [px, py, text]: what a pointer near (px, py) is told
  for (const s of spec.series || []) {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (spec.y.type !== 'log' || p[1] > 0));
    if (s.hover) s.points.forEach((p, i) => {
      if (Number.isFinite(p[0]) && Number.isFinite(p[1]) && (spec.y.type !== 'log' || p[1] > 0)) hoverPts.push([X.f(p[0]), cy(p[1]), s.hover(p, i)]);
    });
    if (s.kind === 'line') {
      if (pts.length < 2) continue;
      el('polyline', {
        points: pts.map((p) => `${X.f(p[0]).toFixed(1)},${cy(p[1]).toFixed(1)}`).join(' '), fill: 'none', stroke: s.color,
        'stroke-width': s.width || 1.5, 'stroke-dasharray': s.dash, opacity: s.opacity, 'stroke-linejoin': 'round',
      }, body);
    } else if (s.kind === 'dots') {
      const g = el('g', { opacity: s.opacity }, body);
      for (const p of pts) {
        el('circle', {
          cx: X.f(p[0]).toFixed(1), cy: cy(p[1]).toFixed(1), r: s.r || 2.5,
          fill: s.hollow ? 'none' : s.color, stroke: s.hollow ? s.color : 'none', 'stroke-width': s.hollow ? 1 : 0,
        }, g);
      }
    } else if (s.kind === 'bars') {
      const bw = Math.max(1, Math.abs(X.f(s.barWidth || 0.8) - X.f(0)));
      const base = spec.y.type === 'log' ? H - m.b : cy(0);
      s.points.forEach((p, i) => {
        if (!Number.isFinite(p[1])) return;
        const py = cy(p[1]);
        const r = el('rect', {
          x: (X.f(p[0]) - bw / 2).toFixed(1), y: Math.min(py, base).toFixed(1), width: bw.toFixed(1),
          height: Math.max(0.5, Math.abs(base - py)).toFixed(1), fill: i === s.highlight ? s.highlightColor || s.color : s.color,
          opacity: i === s.highlight ? 1 : s.opacity ?? 1, class: s.onClick ? 'bar' : undefined,
        }, body);
        if (s.titles) el('title', {}, r).textContent = s.titles[i];
        if (s.onClick) {
          r.addEventListener('click', () => s.onClick(i));
          // keyboard: each clickable bar is a focusable button
          r.setAttribute('tabindex', '0');
          r.setAttribute('role', 'button');
          if (s.titles) r.setAttribute('aria-label', s.titles[i]);
          r.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); s.onClick(i); } });
        }
      });
    }
  }
  if (spec.legend) {
    // right-aligned in the band above the plot; the text width is estimated (5.6 px per character)
    let lx = W - m.r;
    const ly = 9;
    for (const it of [...spec.legend].reverse()) {
      el('text', { x: lx, y: ly + 4, 'text-anchor': 'end', class: 'legend' }, svg).textContent = it.label;
      const sx = lx - it.label.length * 5.6 - 19;
      if (it.kind === 'line') el('line', { x1: sx, x2: sx + 14, y1: ly, y2: ly, stroke: it.color, 'stroke-width': it.width || 2, 'stroke-dasharray': it.dash }, svg);
      else el('circle', { cx: sx + 7, cy: ly, r: 3.5, fill: it.hollow ? 'none' : it.color, stroke: it.color }, svg);
      lx = sx - 16;
    }
  }
  if (spec.empty) el('text', { x: (m.l + W - m.r) / 2, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', class: 'empty' }, svg).textContent = spec.empty;
  container.replaceChildren(svg);
  container._hover = hoverPts;
  container.dataset.hoverPoints = String(hoverPts.length);
  if (!container._hoverWired) {
    container._hoverWired = true;
    container.addEventListener('pointermove', (ev) => plotHover(container, ev));
    container.addEventListener('pointerleave', () => hideTip(container));
  }
  return svg;
}

// A chart's text summary for screen readers when its spec has no title: what is plotted against what,
// each legend entry with its number of points and range of values.
function plotSummary(spec) {
  if (spec.empty) return `${spec.y.label || 'chart'}: ${spec.empty}`;
  const parts = [], legend = spec.legend || [];
  const shown = (spec.series || []).filter((s) => s.kind !== 'line' || !(spec.series || []).some((t) => t !== s && t.points === s.points));
  shown.forEach((s, i) => {
    const ys = s.points.map((p) => p[1]).filter(Number.isFinite);
    if (!ys.length) return;
    const name = shown.length === legend.length ? legend[i].label : `series ${i + 1}`;
    parts.push(`${name}: ${ys.length} points, ${fmt(Math.min(...ys))} to ${fmt(Math.max(...ys))}`);
  });
  return `${spec.y.label || 'value'} against ${spec.x.label || 'x'}${parts.length ? ': ' + parts.join('; ') : ''}`;
}

// Hover: the point nearest the pointer (within 24 px) is marked and its values shown in a tooltip.
const tip = document.createElement('div');
tip.className = 'plot-tip';
tip.id = 'plot-tip';
tip.setAttribute('role', 'tooltip');
tip.hidden = true;
document.body.appendChild(tip);
function plotHover(container, ev) {
  const svg = container.querySelector('svg'), pts = container._hover || [];
  if (!svg || !pts.length) return hideTip(container);
  const r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal, k = r.width / vb.width;
  const mx = (ev.clientX - r.left) / k, my = (ev.clientY - r.top) / k;
  let best = null, bd = (24 / k) ** 2;
  for (const p of pts) {
    const d = (p[0] - mx) ** 2 + (p[1] - my) ** 2;
    if (d < bd) { bd = d; best = p; }
  }
  if (!best) return hideTip(container);
  let mark = svg.querySelector('.hover-mark');
  if (!mark) mark = el('circle', { class: 'hover-mark', r: 5 }, svg);
  mark.setAttribute('cx', best[0]);
  mark.setAttribute('cy', best[1]);
  tip.textContent = best[2];
  tip.hidden = false;
  tip.dataset.plot = container.id;
  const tx = r.left + best[0] * k, ty = r.top + best[1] * k;
  tip.style.left = `${Math.min(window.innerWidth - tip.offsetWidth - 4, Math.max(4, tx + 10))}px`;
  tip.style.top = `${Math.max(4, ty - tip.offsetHeight - 8)}px`;
}
function hideTip(container) {
  const mark = container.querySelector('.hover-mark');
  if (mark) mark.remove();
  if (tip.dataset.plot === container.id) tip.hidden = true;
}

debug.renderPlot = (el, spec) => renderPlot(el, spec);   // for tests of the plotting rules

function extent(arrays, { positive = false } = {}) {
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (const v of a) if (Number.isFinite(v) && (!positive || v > 0)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo <= hi ? [lo, hi] : [positive ? 0.1 : 0, 1];
}
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
// One palette, one meaning per colour on every plot: batch statistics (and train mode) blue, running
// statistics orange, eval mode green, the distance |Δmean|/σ indigo, the variance ratio purple, loss
// dark grey, a "before" state and reference lines grey.
const COLORS = {
  batch: css('--batch') || '#2563eb', running: css('--running') || '#d97706', eval: css('--eval') || '#0f9d76',
  dMean: '#4338ca', dMeanLight: '#a5b4fc', dVar: '#a21caf', loss: '#374151', before: '#c3c9d4', faint: '#98a0ae',
};

// ---- page state -------------------------------------------------------------------------------
const ui = {
  mode: $('mode'), batch: $('batch-size'), slider: $('batch-slider'), layer: $('layer'), seed: $('seed'),
  update: $('update-running'), run: $('run'),
};
let model = null;          // the worker's describe(): name, info, inputSize, mean, std, dataset
let lab = { threads: 1, build: 'single-thread' };   // what the worker's bnlab reports at init
let lastRun = null;
let longJob = null;        // 'spread' | 'train' | 'precise' while one runs
const times = { train: new Map(), eval: new Map() };
const trainLog = [];

let lastValidB = 32;   // an empty or invalid batch field keeps the last valid size (and says so)
function settings() {
  const raw = ui.batch.value.trim();
  let B = Math.round(Number(raw));
  if (raw === '' || !Number.isFinite(B) || B < 1 || B > 256) B = lastValidB;
  return {
    mode: ui.mode.value === 'eval' ? 'eval' : 'train', batchSize: B, layer: ui.layer.value || 'bn1',
    seed: Math.max(0, Math.floor(Number(ui.seed.value) || 0)), updateRunning: ui.update.checked,
  };
}

function setControlsEnabled(on) {
  for (const id of ['run', 'spread-run', 'precise-run', 'train-start', 'reset-model', 'save-model', 'new-batch'])
    if ($(id) && !(longJob && $(id).dataset.stopper === longJob)) $(id).disabled = !on || !!$(id).dataset.na;
  // loading weights or photos waits for a long job: not offered while one runs
  for (const id of ['weights-file', 'image-files', 'image-folder']) {
    $(id).disabled = !on;
    $(id).closest('label').classList.toggle('disabled', !on);
  }
  if ($('model-select')) $('model-select').disabled = !on;   // the model menu too
}

// Panels whose content no longer matches the controls are dimmed until a run redraws them.
function markStale() {
  const s = settings(), r = lastRun;
  const stale = !r || r.B !== s.batchSize || r.mode !== s.mode || r.seed !== s.seed || r.layer !== s.layer;
  for (const id of ['stats-panel', 'overview-panel', 'probe-panel']) {
    $(id).classList.toggle('stale', stale);
    $(id).dataset.stale = String(stale);
  }
  $('thumbs').closest('.card').classList.toggle('stale', stale);
  updateSpreadStale();
}
function updateSpreadStale() {
  const sp = lastSpread, cur = ui.layer.value;
  const msg = sp && sp.layer !== cur ? `measured for ${sp.layer}: press measure for ${cur}` : '';
  $('spread-stale').textContent = msg;
  $('spread-panel').classList.toggle('stale', !!msg);
  $('spread-panel').dataset.stale = String(!!msg);
}

// ---- model ------------------------------------------------------------------------------------
function showModel(d) {
  model = d;
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
    : 'Train here needs labelled images of this model\'s classes; its batches are photos, which have none, so it is off for this model.';
  setControlsEnabled(outstanding === 0 && !longJob);
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

// The model card (data-testid="model-card"): what the model is, the input size it runs at, where
// its mean/std and class names came from, what it was trained on, and the threads in use.
function renderCard(d) {
  const i = d.info, p = i.provenance;
  const depth = i.blocks.reduce((a, b) => a + b, 0) * (i.block === 'bottleneck' ? 3 : 2) + 2;
  const src = (f) => {
    const s = document.createElement('span');
    s.className = `src ${f.from}`;
    s.textContent = f.from === 'file' ? ' · from the file' : ` · assumed: ${f.why}`;
    return s;
  };
  const names = i.labels ? (p.labels.from === 'file' ? `${i.labels.length} names (${i.labels.slice(0, 3).join(', ')}, …)`
    : `the ${i.labels.length} ImageNet class names`) : 'none (numbered)';
  const threads = `${lab.threads} ${lab.threads === 1 ? 'thread' : 'threads'} (${lab.build} build)`;
  const rows = [
    ['architecture', `ResNet-${depth}: ${i.block} blocks [${i.blocks.join(', ')}], widths [${i.widths.join(', ')}], ` +
      `${(i.numParams / 1e6).toFixed(i.numParams < 1e6 ? 3 : 1)} M parameters, ${i.bnLayers.length} BatchNorm layers`],
    ['input', `${d.inputH}×${d.inputW}`, [p.inputSize]],
    ['classes', String(i.numClasses)],
    ['class names', names, [p.labels]],
    ['mean / std', `[${i.mean.map(fmt).join(', ')}] / [${i.std.map(fmt).join(', ')}]`, p.mean.from === p.std.from ? [p.mean] : [p.mean, p.std]],
    ['trained on', i.trainData || 'unknown', [p.trainData]],
    ['batches', d.source.kind === 'procedural' ? 'procedural shapes' : d.source.kind === 'fashion-mnist' ? 'Fashion-MNIST test images' : 'photos (random-resized crops)'],
    ['threads', threads],
  ];
  const dl = $('model-card');
  dl.replaceChildren();
  for (const [k, v, fields] of rows) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k;
    const b = document.createElement('b');
    b.textContent = v;
    dd.appendChild(b);
    for (const f of fields || []) dd.appendChild(src(f));
    dl.append(dt, dd);
  }
  const problems = Object.values(p).filter((f) => f.problem).map((f) => f.problem);
  for (const pr of problems) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = 'ignored';
    dd.className = 'problem';
    dd.textContent = `${pr}: the assumption above is used instead`;
    dl.append(dt, dd);
  }
  Object.assign(dl.dataset, {
    inputSize: `${d.inputH}x${d.inputW}`, classes: String(i.numClasses), source: d.source.kind, trainData: i.trainData || '',
    assumed: JSON.stringify(Object.keys(p).filter((k) => p[k].from === 'assumed')), problems: String(problems.length),
    threads: String(lab.threads), build: lab.build,
  });
  $('time-threads').textContent = threads;
}

// What the batches are, and why, beside the image controls.
function showSource(d) {
  const n = d.photos.shipped + d.photos.user;
  $('data-desc').textContent = d.source.kind === 'fashion-mnist'
    ? `Fashion-MNIST test images (what this model was trained on; ${d.dataset.count.toLocaleString('en')} served by this page's server), ` +
      `${d.dataset.classes} classes at ${d.inputH}×${d.inputW}, with their labels. ${FASHION_SPLIT} Your photos go first in the batch (resized and centre-cropped).`
    : d.source.kind === 'procedural'
    ? `Procedural shapes drawn by the wasm build (what this model was trained on), ${d.dataset.classes} classes at ${d.inputH}×${d.inputW}. Your photos go first in the batch (resized and centre-cropped).`
    : `Photos: each batch is random-resized crops with flips (torchvision's RandomResizedCrop recipe) of ${n} photos ` +
      `(${d.photos.shipped} shipped, public domain / CC0${d.photos.user ? `, ${d.photos.user} yours` : ''}), at ${d.inputH}×${d.inputW}. ` +
      `The first image is ${d.photos.probe ? `“${d.photos.probe}”` : 'the probe photo'} resized and centre-cropped. Add your own to the pool:`;
  $('source-note').textContent = d.source.note || '';
  $('source-note').hidden = !d.source.note;
  $('clear-images').disabled = d.photos.user === 0;
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
    lastRun = null;
    markStale();
    times.train.clear(); times.eval.clear();
    trainLog.length = 0;
    drawTrain();
    lastSpread = null;
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

function drawThumbs(r) {
  const box = $('thumbs');
  box.replaceChildren();
  r.thumbs.forEach((rgba, i) => {
    const c = document.createElement('canvas');
    c.width = r.W;
    c.height = r.H;
    c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), r.W, r.H), 0, 0);
    if (r.thumbUser[i]) c.className = 'user';
    const cr = r.crops && r.crops[i];
    const where = cr ? ` of ${cr.photo}: ${Math.round(cr.w)}×${Math.round(cr.h)} at (${Math.round(cr.x)}, ${Math.round(cr.y)})${cr.flip ? ', flipped' : ''}` : '';
    c.title = (r.thumbUser[i] ? 'your photo' : r.source === 'photos' ? (i === 0 ? 'the probe photo, centre crop' : `random crop ${i}`)
      : r.source === 'fashion-mnist' ? `Fashion-MNIST test image ${r.thumbIndex[i]}: ${model.dataset.names[r.thumbLabel[i]]}` : `procedural image ${i}`) + where;
    box.appendChild(c);
  });
  const pc = $('probe-canvas');
  pc.width = r.W;
  pc.height = r.H;
  if (r.thumbs[0]) pc.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(r.thumbs[0]), r.W, r.H), 0, 0);
}

// ---- one batch --------------------------------------------------------------------------------
let runQueued = false, runActive = false;
function requestRun() {
  runQueued = true;
  if (!runActive) pumpRuns();
}
async function pumpRuns() {
  runActive = true;
  try {
    while (runQueued) {
      runQueued = false;
      await doRun().catch(() => {});
    }
  } finally {
    runActive = false;
  }
}

async function doRun() {
  if (!model) return;
  const s = settings();
  const t0 = performance.now();
  try {
    const r = await call('run', s, { label: `busy: ${s.mode}-mode batch of ${s.batchSize}…` });
    r.roundTripMs = performance.now() - t0;
    lastRun = r;
    debug.runs++;
    debug.last = {
      mode: r.mode, B: r.B, layer: r.layer, msTrain: r.msTrain, msEval: r.msEval, roundTripMs: r.roundTripMs,
      layerDist: r.layerDist, overview: r.overview.map((o) => ({ ...o })), probe: r.probe, accEval: r.accEval, accTrain: r.accTrain,
    };
    debug.lastBatchMean = r.batchMean ? Array.from(r.batchMean) : null; // null: GroupNorm, frozen, none
    debug.crops = r.crops;
    debug.thumbs = { source: r.source, index: r.thumbIndex, label: r.thumbLabel };
    times.train.set(r.B, r.msTrain);
    if (r.msEval != null) times.eval.set(r.B, r.msEval);
    if (r.modified && !model.modified) { model.modified = true; showModelNote(); }
    if (r.batchMean) { drawStats(r); drawOverview(r); } else {
      // GroupNorm, frozen, none: no batch statistics to set against running ones (issue 14; see the norm panel)
      $('stats-readout').textContent = `${r.layer}: this model's normalization (${model.info.norm}) has no batch statistics: see "This layer's normalization"`;
      $('stats-panel').dataset.run = String(debug.runs);
    }
    drawProbe(r);
    drawNorm($('norm-body'), r);
    drawTimes();
    drawThumbs(r);
    markStale();
    ready();
    showChannel();   // the channel view follows the run (web/panel_channel.mjs)
    return r;
  } catch (e) {
    fail('run', e, 'batch');
    throw e;
  }
}

function showModelNote() {
  $('model-note').textContent = 'modified in this tab (reset restores the file)';
  $('model-note').className = 'note warn';
}

// (1) batch vs running statistics of the chosen layer, per channel
function drawStats(r) {
  const panel = $('stats-panel');
  const C = r.channels;
  const order = Array.from({ length: C }, (_, c) => c);
  const uses = r.mode === 'train' ? 'batch' : 'running';
  const strong = (which) => which === uses;
  const mk = (batch, running, log) => {
    const o = [...order].sort((a, b) => running[a] - running[b]);
    const runPts = o.map((c, k) => [k, running[c]]), batPts = o.map((c, k) => [k, batch[c]]);
    const [lo, hi] = extent([batch, running], { positive: log });
    const r0 = C > 300 ? 1.3 : C > 100 ? 1.8 : 2.6;
    return {
      height: 190,
      x: { type: 'lin', min: -0.5, max: C - 0.5, exact: true, label: `channel (${C}, sorted by running value)`, integer: true },
      y: { type: log ? 'log' : 'lin', min: lo, max: hi, label: log ? 'variance' : 'mean' },
      series: [
        { kind: 'line', points: runPts, color: COLORS.running, width: strong('running') ? 2.4 : 1.3, dash: strong('running') ? null : '4 3', opacity: strong('running') ? 1 : 0.8 },
        { kind: 'dots', points: batPts, color: COLORS.batch, r: r0, hollow: !strong('batch'), opacity: strong('batch') ? 0.9 : 0.55,
          hover: (p, k) => `${r.layer} channel ${o[k]}: batch ${log ? 'variance' : 'mean'} ${fmt(batch[o[k]])}, running ${fmt(running[o[k]])}` },
      ],
      legend: [
        { label: `batch of ${r.B}${strong('batch') ? ' (used)' : ' (not used in eval)'}`, color: COLORS.batch, hollow: !strong('batch') },
        { label: `running${strong('running') ? ' (used)' : ' (not used in train)'}`, color: COLORS.running, kind: 'line', dash: strong('running') ? null : '4 3' },
      ],
    };
  };
  renderPlot($('plot-mean'), mk(r.batchMean, r.runningMean, false));
  renderPlot($('plot-var'), mk(r.batchVar, r.runningVar, true));
  $('stats-title').textContent = `${r.layer} · ${C} channels · ${r.mode} mode · batch of ${r.B}`;
  $('stats-readout').innerHTML = `${r.mode === 'train' ? 'normalizes with the <b>batch</b> statistics' : 'normalizes with the <b>running</b> statistics (batch ones: what a train-mode forward of this batch computes)'} · ` +
    `|Δmean|/σ <b>${r.layerDist.dMean.toFixed(3)}</b> · |ln var ratio| <b>${r.layerDist.dVar.toFixed(3)}</b> · running stats from ${r.numBatchesTracked} batches` +
    `${r.updateRunning ? ' · <b>updated by this forward</b>' : ''}`;
  Object.assign(panel.dataset, {
    run: String(debug.runs), mode: r.mode, layer: r.layer, batchSize: String(r.B), used: uses,
    dMean: String(r.layerDist.dMean), dVar: String(r.layerDist.dVar), channels: String(C),
    numBatchesTracked: String(r.numBatchesTracked), updateRunning: String(r.updateRunning),
  });
}

// (3) every layer: distance between batch and running statistics
function drawOverview(r) {
  const L = r.overview.length, li = r.overview.findIndex((o) => o.name === r.layer);
  const bands = [];
  r.overview.forEach((o, i) => {
    const st = o.name.startsWith('layer') ? o.name.split('.')[0] : 'stem';
    if (!bands.length || bands[bands.length - 1].label !== st) bands.push({ from: i - 0.5, to: i + 0.5, label: st });
    else bands[bands.length - 1].to = i + 0.5;
  });
  const dm = r.overview.map((o) => o.dMean), dv = r.overview.map((o) => o.dVar);
  const [, hi] = extent([dm, dv]);
  renderPlot($('plot-overview'), {
    height: 206, bands,
    x: { type: 'lin', min: -0.5, max: L - 0.5, exact: true, label: `${L} BatchNorm layers in module order`, hideTicks: true },
    y: { type: 'lin', min: 0, max: hi, label: 'distance' },
    series: [
      { kind: 'bars', points: dm.map((v, i) => [i, v]), color: COLORS.dMeanLight, highlight: li, highlightColor: COLORS.dMean, barWidth: 0.72,
        hover: (p, i) => `${r.overview[i].name}: |Δmean|/σ ${r.overview[i].dMean.toFixed(3)}, |ln var ratio| ${r.overview[i].dVar.toFixed(3)}`,
        titles: r.overview.map((o) => `${o.name}: |Δmean|/σ ${o.dMean.toFixed(3)}, |ln var ratio| ${o.dVar.toFixed(3)}`),
        onClick: (i) => { ui.layer.value = r.overview[i].name; requestRun(); } },
      { kind: 'dots', points: dv.map((v, i) => [i, v]), color: COLORS.dVar, r: 2.2, opacity: 0.9,
        hover: (p, i) => `${r.overview[i].name}: |Δmean|/σ ${r.overview[i].dMean.toFixed(3)}, |ln var ratio| ${r.overview[i].dVar.toFixed(3)}` },
    ],
    legend: [
      { label: '|Δmean| / running σ', color: COLORS.dMean },
      { label: '|ln(batch var / running var)|', color: COLORS.dVar },
    ],
  });
  const panel = $('overview-panel');
  panel.dataset.dMean = JSON.stringify(dm.map((v) => +v.toFixed(5)));
  panel.dataset.dVar = JSON.stringify(dv.map((v) => +v.toFixed(5)));
}

// (4) one image, eval vs train mode
function drawProbe(r) {
  const labels = model.info.labels;
  const dsNames = (model.dataset && model.dataset.names) || [];
  // the true class is marked only when the model's classes are the dataset's (trained on it)
  const sameClasses = !!labels && labels.every((l, k) => l === dsNames[k]);
  const nameOf = (k) => (labels && labels[k] != null ? labels[k] : `class ${k}`);
  const truth = r.probe.label != null && sameClasses ? r.probe.label : null;
  $('probe-label').textContent = r.probe.name ? `${r.probe.fromUser ? 'your photo' : 'photo'}: ${r.probe.name}`
    : `${r.source === 'fashion-mnist' ? 'Fashion-MNIST' : 'procedural'}: ${dsNames[r.probe.label] ?? r.probe.label}`;
  const cols = [
    ['eval', 'eval, alone', r.probe.eval],
    ['train', 'train, alone (B = 1)', r.probe.trainAlone],
    ['train', `train, in the batch of ${r.B}`, r.probe.trainBatch],
  ].filter((c) => c[2]); // train alone: null where B = 1 is undefined (r.probe.trainAloneError)
  const box = $('probe-cols');
  box.replaceChildren();
  for (const [cls, title, top] of cols) {
    const col = document.createElement('div');
    col.className = `probe-col ${cls}`;
    const h = document.createElement('h3');
    h.textContent = title;
    const list = document.createElement('div');
    list.className = 'top5';
    for (const { k, p } of top) {
      const n = document.createElement('span');
      n.className = 'name' + (k === truth ? ' truth' : '');
      n.textContent = nameOf(k);
      n.title = `${nameOf(k)}: ${(100 * p).toFixed(2)}%`;
      const bar = document.createElement('i');
      bar.style.width = `${Math.max(1, 100 * p).toFixed(1)}%`;
      n.prepend(bar);
      const pv = document.createElement('span');
      pv.className = 'p';
      pv.textContent = `${(100 * p).toFixed(p < 0.1 ? 1 : 0)}%`;
      list.append(n, pv);
    }
    col.append(h, list);
    box.appendChild(col);
  }
  const panel = $('probe-panel');
  panel.dataset.evalTop1 = String(r.probe.eval[0].k);
  panel.dataset.trainTop1 = String(r.probe.trainBatch[0].k);
  box.dataset.names = JSON.stringify(r.probe.eval.map(({ k }) => nameOf(k)));
  box.dataset.p = JSON.stringify(r.probe.eval.map(({ p }) => +p.toFixed(6)));
}

// (5) time per forward
function drawTimes() {
  const pts = (m) => [...m.entries()].sort((a, b) => a[0] - b[0]);
  const tr = pts(times.train), ev = pts(times.eval);
  const Bs = [...tr, ...ev].map((p) => p[0]);
  const [blo, bhi] = Bs.length ? [Math.min(...Bs), Math.max(...Bs)] : [1, 256];
  const [lo, hi] = extent([tr.map((p) => p[1]), ev.map((p) => p[1])], { positive: true });
  renderPlot($('plot-time'), {
    height: 180,
    x: { type: 'log', min: Math.min(blo, 1), max: Math.max(bhi, 2), label: 'batch size B', ticks: [1, 2, 4, 8, 16, 32, 64, 128, 256] },
    y: { type: 'log', min: lo, max: hi, label: 'ms per forward' },
    series: [
      { kind: 'line', points: tr, color: COLORS.batch, width: 1.2, opacity: 0.6 },
      { kind: 'dots', points: tr, color: COLORS.batch, r: 3, hover: (p) => `B = ${p[0]}: train mode ${p[1].toFixed(1)} ms per forward` },
      { kind: 'line', points: ev, color: COLORS.eval, width: 1.2, opacity: 0.6 },
      { kind: 'dots', points: ev, color: COLORS.eval, r: 3, hover: (p) => `B = ${p[0]}: eval mode ${p[1].toFixed(1)} ms per forward` },
    ],
    legend: [{ label: 'train mode', color: COLORS.batch }, { label: 'eval mode', color: COLORS.eval }],
    empty: tr.length ? null : 'run a batch',
  });
  if (lastRun) {
    const r = lastRun;
    const ev = r.msEval != null ? ` · eval <b>${r.msEval.toFixed(1)} ms</b>` : '';
    $('time-readout').innerHTML = `B=${r.B}: train <b>${r.msTrain.toFixed(1)} ms</b>${ev} · ${(r.msTrain / r.B).toFixed(2)} ms/image · page round trip ${r.roundTripMs.toFixed(0)} ms`;
    Object.assign($('time-panel').dataset, { msTrain: String(r.msTrain), msEval: String(r.msEval), roundTrip: String(r.roundTripMs), batchSize: String(r.B) });
  }
  debug.times = { train: Object.fromEntries(times.train), eval: Object.fromEntries(times.eval) };
}

const SPREAD_CAPTION = document.getElementById('spread-caption').textContent;

// ---- (2) spread of the batch mean against 1/sqrt(B) -------------------------------------------
let lastSpread = null;
function drawSpread(progressPoints) {
  if (progressPoints && progressPoints.length) debug.spreadDraws = (debug.spreadDraws || 0) + 1;   // points drawn as they arrive
  const sp = lastSpread;
  const pts = progressPoints || (sp ? sp.points : []);
  const xy = pts.map((p) => [p.B, p.spread]);
  const maxB = Number($('spread-max').value);
  const series = [];
  let legend = null, yExtra = [];
  if (xy.length) {
    const c = sp && !progressPoints ? sp.c : Math.exp(xy.reduce((a, [B, s]) => a + Math.log(s) + 0.5 * Math.log(B), 0) / xy.length);
    const ref = [];
    for (let B = 1; B <= maxB * 1.0001; B *= Math.SQRT2) ref.push([B, c / Math.sqrt(B)]);
    series.push({ kind: 'line', points: ref, color: COLORS.faint, dash: '5 4', width: 1.5 });
    series.push({ kind: 'line', points: xy, color: COLORS.batch, width: 1.5 });
    series.push({ kind: 'dots', points: xy, color: COLORS.batch, r: 3.2,
      hover: (p) => `B = ${p[0]}: std of the batch mean ${fmt(p[1])} σ (c/√B: ${fmt(c / Math.sqrt(p[0]))})` });
    legend = [{ label: 'measured', color: COLORS.batch }, { label: `${fmt(c)}/√B`, color: COLORS.faint, kind: 'line', dash: '5 4' }];
    // the headline: the batch mean's distance to the running mean, which shrinks with B only while
    // the running statistics describe the data drawn (a floor = a distribution shift)
    const dr = pts.filter((p) => p.dRun != null).map((p) => [p.B, p.dRun]);
    if (dr.length) {
      series.push({ kind: 'line', points: dr, color: COLORS.dMean, width: 1.2, opacity: 0.7 });
      series.push({ kind: 'dots', points: dr, color: COLORS.dMean, r: 3,
        hover: (p) => `B = ${p[0]}: mean |batch mean − running mean| / running σ ${fmt(p[1])} (pure noise would give about 0.8 × ${fmt(c / Math.sqrt(p[0]))})` });
      legend.push({ label: '|Δmean| / running σ', color: COLORS.dMean });
      yExtra = dr;   // in the y range
    }
  }
  const ys = [...xy, ...yExtra].map((p) => p[1]);
  renderPlot($('plot-spread'), {
    height: 196,
    x: { type: 'log', min: 1, max: maxB, label: 'batch size B', ticks: [1, 2, 4, 8, 16, 32, 64, 128, 256] },
    y: { type: 'log', min: ys.length ? Math.min(...ys) : 0.01, max: ys.length ? Math.max(...ys) : 1, label: 'std of batch mean / σ' },
    series, legend,
    empty: xy.length ? null : (longJob === 'spread' ? 'measuring…' : 'press measure'),
  });
  if (sp && !progressPoints) {
    $('spread-caption').textContent = `Layer ${sp.layer}: std over K = ${sp.K} train-mode batches of the batch mean, in units of the channel's spread (RMS over channels), against c/√B. ` +
      'Exact for the stem; deeper layers also see the batch through earlier layers. ' +
      'Indigo: the mean distance of the batch mean to the running mean; it follows 1/√B while batch noise dominates and levels off ' +
      'where the running statistics describe other data than these batches (a distribution shift: for the Fashion-MNIST model, its augmented training images).';
    const panel = $('spread-panel');
    panel.dataset.layer = sp.layer;
    panel.dataset.spread = JSON.stringify(Object.fromEntries(sp.points.map((p) => [p.B, p.spread])));
    panel.dataset.c = String(sp.c);
    panel.dataset.dRun = JSON.stringify(Object.fromEntries(sp.points.map((p) => [p.B, p.dRun])));
  } else if (!sp && !progressPoints) {
    $('spread-caption').textContent = SPREAD_CAPTION;
    delete $('spread-panel').dataset.layer;
  }
  updateSpreadStale();
}

async function measureSpread() {
  if (longJob) return;
  const K = Number($('spread-k').value), maxB = Number($('spread-max').value), s = settings();
  const sizes = [];
  for (let B = 1; B <= maxB; B *= 2) sizes.push(B);
  longJob = 'spread';
  const btn = $('spread-run');
  btn.textContent = 'stop';
  btn.dataset.stopper = 'spread';
  setControlsEnabled(false);
  btn.disabled = false;
  drawSpread([]);
  const got = [];
  try {
    lastSpread = await call('spread', { layer: s.layer, sizes, K, seed: s.seed }, {
      label: `busy: ${K} batches at each of ${sizes.length} batch sizes…`,
      onProgress: (p) => {
        setStatus('busy', `busy: spread at B = ${p.B} (${Math.round((100 * p.done) / p.total)}%)`);
        if (p.point) { got.push(p.point); drawSpread(got); }
      },
    });
    debug.spread = lastSpread;
    for (const p of lastSpread.points) if (p.msPerForward != null) times.train.set(p.B, p.msPerForward);
    drawTimes();
    ready();
  } catch (e) {
    if (e.stopped || /stopped/.test(e.message)) setStatus('ready', 'ready · measurement stopped');
    else fail('spread', e, 'spread');
  } finally {
    longJob = null;
    delete btn.dataset.stopper;
    btn.textContent = 'measure';
    setControlsEnabled(true);
    drawSpread();
  }
}

// ---- train here -------------------------------------------------------------------------------
function drawTrain() {
  const n = trainLog.length;
  const loss = trainLog.map((p) => [p.step, p.loss]);
  const conv = trainLog.map((p) => [p.step, p.dMean]);
  const xmax = Math.max(10, n ? trainLog[n - 1].step : 10);
  renderPlot($('plot-loss'), {
    height: 170,
    x: { type: 'lin', min: 0, max: xmax, label: 'SGD step' },
    y: { type: 'lin', min: 0, max: n ? Math.max(...loss.map((p) => p[1])) : 2.5, label: 'loss' },
    series: [{ kind: 'line', points: loss, color: COLORS.loss, width: 1.4, hover: (p) => `step ${p[0]}: loss ${p[1].toFixed(4)}` }],
    empty: n ? null : 'press train',
  });
  renderPlot($('plot-converge'), {
    height: 170,
    x: { type: 'lin', min: 0, max: xmax, label: 'SGD step' },
    y: { type: 'lin', min: 0, max: n ? Math.max(...conv.map((p) => p[1])) : 1, label: '|Δmean| / σ' },
    series: [{ kind: 'line', points: conv, color: COLORS.dMean, width: 1.4, hover: (p) => `step ${p[0]}: |Δmean|/σ ${p[1].toFixed(4)}` }],
    empty: n ? null : (lastRun ? `layer ${lastRun.layer}` : ''),
  });
  debug.train = trainLog;
}

async function trainHere() {
  if (longJob) return;
  const s = settings();
  const args = {
    lr: Number($('train-lr').value) || 0.005, momentum: Math.min(0.99, Math.max(0, Number($('train-mom').value) || 0)),
    steps: Math.max(1, Math.floor(Number($('train-steps').value) || 100)), B: s.batchSize, layer: s.layer, seed: s.seed + 1000,
  };
  longJob = 'train';
  setControlsEnabled(false);
  $('train-stop').disabled = false;
  trainLog.length = 0;
  let lastAcc = null, frame = 0;
  drawTrain();
  try {
    const r = await call('train', args, {
      label: 'busy: training…',
      onProgress: (p) => {
        trainLog.push(p);
        if (p.acc != null) lastAcc = p.acc;
        setStatus('busy', `busy: training, step ${p.step}/${args.steps}, loss ${p.loss.toFixed(3)}`);
        if (!frame) frame = requestAnimationFrame(() => { frame = 0; drawTrain(); });
        $('train-readout').innerHTML = `step <b>${p.step}</b> · loss <b>${p.loss.toFixed(3)}</b> · ${p.ms.toFixed(0)} ms/step` +
          (lastAcc != null ? ` · held-out eval accuracy <b>${(100 * lastAcc).toFixed(1)}%</b>` : '');
      },
    });
    showModel(r);
    drawTrain();
    $('train-readout').innerHTML = `${r.steps} SGD steps of batch ${args.B} (lr ${args.lr}, momentum ${args.momentum}) · ` +
      `eval accuracy <b>${(100 * r.acc).toFixed(1)}%</b> on ${r.heldOut} held-out ${model.dataset.classes}-class ${heldOutKind()} images`;
    ready();
  } catch (e) {
    fail('train', e, 'train');
  } finally {
    longJob = null;
    $('train-stop').disabled = true;
    setControlsEnabled(true);
  }
  requestRun();
}

// ---- PreciseBN --------------------------------------------------------------------------------
async function preciseBN() {
  if (longJob) return;
  const K = Math.min(1000, Math.max(1, Math.floor(Number($('precise-k').value) || 16)));
  const B = Math.min(256, Math.max(1, Math.floor(Number($('precise-b').value) || 32)));
  longJob = 'precise';
  setControlsEnabled(false);
  const beforeLayers = lastRun ? lastRun.overview : null;
  const before = beforeLayers ? beforeLayers.reduce((a, o) => a + o.dMean, 0) / beforeLayers.length : null;
  try {
    const r = await call('precise', { K, B, seed: settings().seed, heldOut: preciseHeldOutN($) }, {   // issue 17 (teach): heldOut
      label: 'busy: recomputing running statistics…',
      onProgress: (p) => { if (p.done != null) setStatus('busy', `busy: PreciseBN batch ${p.done}/${p.total}`); },
    });
    showModel(r);
    longJob = null;
    setControlsEnabled(true);
    const run = await doRun();
    const after = run ? run.overview.reduce((a, o) => a + o.dMean, 0) / run.overview.length : null;
    if (run && beforeLayers) drawPrecise(beforeLayers, run.overview);
    drawPreciseAccuracy($, r, heldOutKind());   // issue 17 (teach): the accuracies with intervals, in #precise-acc
    $('precise-readout').innerHTML = `Running statistics of ${model.info.bnLayers.length} layers replaced by averages over ${K} batches of ${B}. ` +
      `Mean |Δmean|/σ over layers: ${before == null ? '—' : before.toFixed(3)} → <b>${after == null ? '—' : after.toFixed(3)}</b>.`;
    debug.precise = { K, B, accBefore: r.before, accAfter: r.after, distBefore: before, distAfter: after };
    $('precise-panel').dataset.distBefore = String(before);
    $('precise-panel').dataset.distAfter = String(after);
  } catch (e) {
    fail('PreciseBN', e, 'precise');
  } finally {
    longJob = null;
    setControlsEnabled(true);
  }
}

// Per layer |batch mean - running mean| / running std of a batch before and after PreciseBN.
function drawPrecise(before, after) {
  const L = after.length;
  const b = before.map((o, i) => [i - 0.2, o.dMean]), a = after.map((o, i) => [i + 0.2, o.dMean]);
  const [, hi] = extent([b.map((p) => p[1]), a.map((p) => p[1])]);
  renderPlot($('plot-precise'), {
    height: 150,
    x: { type: 'lin', min: -0.5, max: L - 0.5, exact: true, label: 'BatchNorm layer, stem → last block', hideTicks: true },
    y: { type: 'lin', min: 0, max: hi, label: '|Δmean| / σ' },
    series: [
      { kind: 'bars', points: b, color: COLORS.before, barWidth: 0.4, hover: (p, i) => `${after[i].name}: |Δmean|/σ before ${before[i].dMean.toFixed(3)}, after ${after[i].dMean.toFixed(3)}` },
      { kind: 'bars', points: a, color: COLORS.dMean, barWidth: 0.4, hover: (p, i) => `${after[i].name}: |Δmean|/σ after ${after[i].dMean.toFixed(3)}, before ${before[i].dMean.toFixed(3)}` },
    ],
    legend: [{ label: 'before', color: COLORS.before }, { label: 'after', color: COLORS.dMean }],
  });
}

// ---- wiring -----------------------------------------------------------------------------------
let debounce = 0;
function changed(delay = 0) {
  clearTimeout(debounce);
  debounce = setTimeout(() => { if (model) requestRun(); }, delay);
}

function syncSlider() {
  const B = settings().batchSize;
  ui.slider.value = String(Math.round(Math.log2(B)));
}

ui.mode.addEventListener('change', () => { markStale(); changed(); });
ui.layer.addEventListener('change', () => { markStale(); changed(); });
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
  $('batch-note').textContent = ok ? '' : `batch size: a whole number from 1 to 256 (kept ${lastValidB})`;
  if (ok) lastValidB = B;
  ui.batch.value = String(settings().batchSize);
  syncSlider();
  markStale();
  if (ok) changed();
});
ui.batch.addEventListener('input', () => {
  const B = Number(ui.batch.value);
  if (ui.batch.value.trim() === '' || !Number.isInteger(B) || B < 1 || B > 256) return;
  lastValidB = B;
  $('batch-note').textContent = '';
  syncSlider();
  markStale();
  changed(400);
});
ui.slider.addEventListener('input', () => {
  lastValidB = 2 ** Number(ui.slider.value);
  ui.batch.value = String(lastValidB);
  $('batch-note').textContent = '';
  markStale();
  changed(150);
});
ui.seed.addEventListener('change', () => { markStale(); changed(); });
$('new-batch').addEventListener('click', () => { ui.seed.value = String((settings().seed + 1) % 65536); markStale(); changed(); });
ui.run.addEventListener('click', () => requestRun());

$('cancel').addEventListener('click', () => cancelJob());
$('spread-run').addEventListener('click', () => (longJob === 'spread' ? stopWorker() : measureSpread()));
$('spread-max').addEventListener('change', () => drawSpread());
$('train-start').addEventListener('click', () => trainHere());
$('train-stop').addEventListener('click', () => stopWorker());
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
  if ((weights.length || images.length) && longJob) {
    fail('drop', new Error(`wait for ${longJob} to finish (or stop it) before loading ${weights.length ? 'weights' : 'photos'}`), weights.length ? 'model' : 'images');
    return;
  }
  if (weights.length) await loadWeightsFile(weights[0]);
  if (images.length) await addImageFiles(images);
});

// ---- start ------------------------------------------------------------------------------------
initChannelPanel({ $, call, renderPlot, COLORS, getRun: () => lastRun, getModel: () => model, fail, ready });
initGuide($);
initKeyboard();
initAccuracyPanel({ $, call, renderPlot, COLORS, getModel: () => model, getSeed: () => settings().seed, fail, ready });
initCouplingPanel({ $, call, renderPlot, COLORS, getSettings: settings, getModel: () => model, fail, ready }); // issue 17 (teach)

async function start() {
  drawSpread();
  drawTrain();
  drawTimes();
  renderPlot($('plot-mean'), { height: 190, x: { type: 'lin', min: 0, max: 1 }, y: { type: 'lin', min: 0, max: 1 }, empty: 'loading the model…' });
  renderPlot($('plot-var'), { height: 190, x: { type: 'lin', min: 0, max: 1 }, y: { type: 'lin', min: 0, max: 1 }, empty: '' });
  renderPlot($('plot-overview'), { height: 196, x: { type: 'lin', min: 0, max: 1, hideTicks: true }, y: { type: 'lin', min: 0, max: 1 }, empty: '' });
  setControlsEnabled(false);
  try {
    const r = await call('init', {}, { label: 'starting WebAssembly…' });
    debug.isa = r.isa;
    lab = { threads: r.threads, build: r.build };
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
