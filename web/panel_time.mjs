// panel_time.mjs: (5) time per forward against the batch size, train and eval mode, from every run
// (and from a sweep of the last layer); the last run's times as text.
import { renderPlot, COLORS, extent } from './plot.mjs';
import { $, P, debug } from './page.mjs';


// (5) time per forward
export const times = { train: new Map(), eval: new Map() };   // B -> ms per forward

export function drawTimes() {
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
  if (P.lastRun) {
    const r = P.lastRun;
    const ev = r.msEval != null ? ` · eval <b>${r.msEval.toFixed(1)} ms</b>` : '';
    $('time-readout').innerHTML = `B=${r.B}: train <b>${r.msTrain.toFixed(1)} ms</b>${ev} · ${(r.msTrain / r.B).toFixed(2)} ms/image · page round trip ${r.roundTripMs.toFixed(0)} ms`;
    Object.assign($('time-panel').dataset, { msTrain: String(r.msTrain), msEval: String(r.msEval), roundTrip: String(r.roundTripMs), batchSize: String(r.B) });
  }
  debug.times = { train: Object.fromEntries(times.train), eval: Object.fromEntries(times.eval) };
}
