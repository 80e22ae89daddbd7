// panel_stats.mjs: (1) batch against running statistics of the chosen layer, per channel (mean and
// variance), data-testid="stats". drawStats(r) draws a run's (or the layer view's) statistics;
// drawNoBatchStats(r) says why a norm kind has none.
import { renderPlot, COLORS, fmt, extent } from './plot.mjs';
import { $, debug } from './page.mjs';

// (1) batch vs running statistics of the chosen layer, per channel
export function drawStats(r) {
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
