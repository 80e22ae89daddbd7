// panel_spread.mjs: (2) the spread of one layer's batch mean against 1/sqrt(B): K train-mode batches
// at each size, each run only up to that layer (the worker's `spread`: model.forwardTo). Points are
// drawn as they arrive; the sweep can be stopped.
import { renderPlot, COLORS, fmt } from './plot.mjs';
import { $, P, debug, ui, settings, setControlsEnabled } from './page.mjs';
import { call, ready, fail, setStatus } from './jobs.mjs';
import { times, drawTimes } from './panel_time.mjs';

const SPREAD_CAPTION = document.getElementById('spread-caption').textContent;

// ---- (2) spread of the batch mean against 1/sqrt(B) -------------------------------------------
let lastSpread = null;
export const clearSpread = () => { lastSpread = null; };
export function drawSpread(progressPoints) {
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
    empty: xy.length ? null : (P.longJob === 'spread' ? 'measuring…' : 'press measure'),
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

export async function measureSpread() {
  if (P.longJob) return;
  const K = Number($('spread-k').value), maxB = Number($('spread-max').value), s = settings();
  const sizes = [];
  for (let B = 1; B <= maxB; B *= 2) sizes.push(B);
  P.longJob = 'spread';
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
    P.longJob = null;
    delete btn.dataset.stopper;
    btn.textContent = 'measure';
    setControlsEnabled(true);
    drawSpread();
  }
}

export function updateSpreadStale() {
  const sp = lastSpread, cur = ui.layer.value;
  const msg = sp && sp.layer !== cur ? `measured for ${sp.layer}: press measure for ${cur}` : '';
  $('spread-stale').textContent = msg;
  $('spread-panel').classList.toggle('stale', !!msg);
  $('spread-panel').dataset.stale = String(!!msg);
}
