// panel_precise.mjs: PreciseBN: every layer's running statistics recomputed from K batches (C,
// model.preciseBNBegin in the worker), or with "only the layer shown" (#precise-layer) that layer's
// alone, its batches' forwards stopping at it (the worker's preciseOneLayer); with the held-out
// accuracy and the per-layer distance before and after.
import { renderPlot, COLORS, extent } from './plot.mjs';
import { $, P, debug, settings, setControlsEnabled, hooks, heldOutKind } from './page.mjs';
import { call, fail, setStatus } from './jobs.mjs';
import { preciseHeldOutN, drawPreciseAccuracy } from './panel_precise_acc.mjs'; // issue 17

// ---- PreciseBN --------------------------------------------------------------------------------
export async function preciseBN() {
  if (P.longJob) return;
  const K = Math.min(1000, Math.max(1, Math.floor(Number($('precise-k').value) || 16)));
  const B = Math.min(256, Math.max(1, Math.floor(Number($('precise-b').value) || 32)));
  P.longJob = 'precise';
  setControlsEnabled(false);
  const beforeLayers = P.lastRun ? P.lastRun.overview : null;
  const before = beforeLayers ? beforeLayers.reduce((a, o) => a + o.dMean, 0) / beforeLayers.length : null;
  try {
    const layer = $('precise-layer').checked ? settings().layer : undefined;
    const r = await call('precise', { K, B, seed: settings().seed, layer, heldOut: preciseHeldOutN($) }, {   // issue 17: heldOut
      label: 'busy: recomputing running statistics…',
      onProgress: (p) => { if (p.done != null) setStatus('busy', `busy: PreciseBN batch ${p.done}/${p.total}`); },
    });
    hooks.showModel(r);
    P.longJob = null;
    setControlsEnabled(true);
    const run = await hooks.doRun();
    const after = run ? run.overview.reduce((a, o) => a + o.dMean, 0) / run.overview.length : null;
    if (run && beforeLayers) drawPrecise(beforeLayers, run.overview);
    drawPreciseAccuracy($, r, heldOutKind());   // issue 17: the accuracies with intervals, in #precise-acc
    const L = P.model.info.bnLayers.length;
    const what = r.layer ? `Running statistics of ${r.layer} (its forwards stopped there: ${r.ranTo + 1} of ${L} layers ran)` : `Running statistics of ${L} layers`;
    $('precise-readout').innerHTML = `${what} replaced by averages over ${K} batches of ${B}. ` +
      `Mean |Δmean|/σ over layers: ${before == null ? '—' : before.toFixed(3)} → <b>${after == null ? '—' : after.toFixed(3)}</b>.`;
    debug.precise = { K, B, layer: r.layer || null, ranTo: r.ranTo, layers: L, accBefore: r.before, accAfter: r.after, distBefore: before, distAfter: after };
    $('precise-panel').dataset.distBefore = String(before);
    $('precise-panel').dataset.distAfter = String(after);
  } catch (e) {
    fail('PreciseBN', e, 'precise');
  } finally {
    P.longJob = null;
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
