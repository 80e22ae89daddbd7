// panel_accuracy.mjs: the key chart — the accuracy of the same kind of batch in train mode (each batch
// normalized with its own statistics) and in eval mode (running statistics), against the batch size B.
// Labelled data only (procedural shapes, Fashion-MNIST); for photos it is hidden with the reason.
// Each point is K batches (seeds seed .. seed+K-1 of the page's batch stream, so k = 0 at the page's B
// is the batch the other panels show); the worker's `run` command (mode 'eval': both forwards, nothing
// updated) scores them. Exposes the points as data-points (JSON) on #acc-panel.
//
// initAccuracyPanel(deps): deps { $, call, renderPlot, COLORS, getModel, getSeed, fail, ready }.
// accuracyModelChanged(model): app.mjs calls it when a model is shown (forget the old points).

const SIZES = [2, 4, 8, 16, 32, 64, 128];
let D = null;
let points = [];
let forModel = null;

export function initAccuracyPanel(deps) {
  D = deps;
  D.$('acc-run').addEventListener('click', () => measure());
  draw();
}

export function accuracyModelChanged(model) {
  const { $ } = D;
  if (model === forModel) return;
  forModel = model;
  points = [];
  const labelled = model && (model.source.kind === 'procedural' || model.source.kind === 'fashion-mnist');
  $('acc-run').disabled = !labelled;
  $('acc-run').dataset.na = labelled ? '' : '1';
  $('acc-na').textContent = labelled ? ''
    : 'hidden for this model: its batches are photos, which have no labels in its classes, so there is no accuracy to score';
  $('acc-body').hidden = !labelled;
  $('acc-panel').dataset.available = String(!!labelled);
  draw();
}

async function measure() {
  const { call, fail, $ } = D;
  const K = Number($('acc-k').value) || 4, seed = D.getSeed();
  points = [];
  draw();
  try {
    for (const B of SIZES) {
      let tr = 0, ev = 0, n = 0;
      const each = [];
      for (let k = 0; k < K; k++) {
        const r = await call('run', { mode: 'eval', batchSize: B, layer: 'bn1', seed: (seed + k) % 65536, updateRunning: false },
          { label: `busy: accuracy against B: B = ${B}, batch ${k + 1} of ${K}…` });
        if (r.accTrain == null || r.accEval == null) throw new Error('bnlab: these batches have no labels');
        tr += r.accTrain; ev += r.accEval; n++;
        each.push({ train: r.accTrain, eval: r.accEval });
      }
      points.push({ B, train: tr / n, eval: ev / n, K: n, each });
      draw();
    }
    D.ready();
  } catch (e) {
    if (!e.cancelled) fail('accuracy against B', e, 'acc');
  }
}

function draw() {
  const { $, renderPlot, COLORS } = D;
  const pct = (v) => `${(100 * v).toFixed(1)} %`;
  const tr = points.map((p) => [p.B, p.train]), ev = points.map((p) => [p.B, p.eval]);
  const lastT = points.length ? points[points.length - 1] : null;
  const title = points.length
    ? `Accuracy against batch size B: train mode ${points.map((p) => `B=${p.B} ${pct(p.train)}`).join(', ')}; eval mode ${points.map((p) => `B=${p.B} ${pct(p.eval)}`).join(', ')}`
    : 'Accuracy against batch size B: not measured yet';
  renderPlot($('plot-acc'), {
    height: 190, title,
    x: { type: 'log', min: 2, max: 128, label: 'batch size B', ticks: SIZES },
    y: { type: 'lin', min: 0, max: 1, exact: true, label: 'accuracy', format: (v) => `${Math.round(v * 100)}%` },
    series: [
      { kind: 'line', points: ev, color: COLORS.eval, width: 1.6 },
      { kind: 'dots', points: ev, color: COLORS.eval, r: 3, hover: (p) => `B = ${p[0]}: eval mode ${pct(p[1])} (running statistics)` },
      { kind: 'line', points: tr, color: COLORS.batch, width: 1.6 },
      { kind: 'dots', points: tr, color: COLORS.batch, r: 3, hover: (p) => `B = ${p[0]}: train mode ${pct(p[1])} (batch statistics)` },
    ],
    legend: [{ label: 'train mode', color: COLORS.batch }, { label: 'eval mode', color: COLORS.eval }],
    empty: points.length ? null : 'press measure',
  });
  $('acc-readout').textContent = lastT
    ? `${points.length} sizes, ${lastT.K} batches each · B = ${points[0].B}: train ${pct(points[0].train)}, eval ${pct(points[0].eval)}` +
      (points.length > 1 ? ` · B = ${lastT.B}: train ${pct(lastT.train)}, eval ${pct(lastT.eval)}` : '')
    : '';
  $('acc-panel').dataset.points = JSON.stringify(points);
}
