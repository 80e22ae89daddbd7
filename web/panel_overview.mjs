// panel_overview.mjs: (3) every layer at a glance, data-testid="overview": per BatchNorm layer the
// distance of the batch statistics to the running ones (|Δmean|/σ bars, |ln var ratio| dots); a click
// on a bar picks that layer (the layer picker's change: the page shows it). data-d-mean: the contract's
// JSON array.
import { renderPlot, COLORS, extent } from './plot.mjs';
import { $, ui, hooks } from './page.mjs';


// (3) every layer: distance between batch and running statistics
export function drawOverview(r) {
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
        onClick: (i) => { ui.layer.value = r.overview[i].name; hooks.requestRun({ layerOnly: true }); } },
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
