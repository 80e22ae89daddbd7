// panel_train.mjs: "train here": SGD steps of the loaded model on labelled batches, the loss and the
// chosen layer's |Δmean|/σ per step, and the held-out accuracy.
import { renderPlot, COLORS } from './plot.mjs';
import { $, P, debug, settings, setControlsEnabled, hooks, heldOutKind } from './page.mjs';
import { call, ready, fail, setStatus } from './jobs.mjs';

// ---- train here -------------------------------------------------------------------------------
export const trainLog = [];   // the progress messages of the last run: { step, loss, ms, dMean, dVar, acc? }

export function drawTrain() {
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
    empty: n ? null : (P.lastRun ? `layer ${P.lastRun.layer}` : ''),
  });
  debug.train = trainLog;
}

export async function trainHere() {
  if (P.longJob) return;
  const s = settings();
  const args = {
    lr: Number($('train-lr').value) || 0.005, momentum: Math.min(0.99, Math.max(0, Number($('train-mom').value) || 0)),
    steps: Math.max(1, Math.floor(Number($('train-steps').value) || 100)), B: s.batchSize, layer: s.layer, seed: s.seed + 1000,
  };
  P.longJob = 'train';
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
    hooks.showModel(r);
    drawTrain();
    $('train-readout').innerHTML = `${r.steps} SGD steps of batch ${args.B} (lr ${args.lr}, momentum ${args.momentum}) · ` +
      `eval accuracy <b>${(100 * r.acc).toFixed(1)}%</b> on ${r.heldOut} held-out ${P.model.dataset.classes}-class ${heldOutKind()} images`;
    ready();
  } catch (e) {
    fail('train', e, 'train');
  } finally {
    P.longJob = null;
    $('train-stop').disabled = true;
    setControlsEnabled(true);
  }
  hooks.requestRun();
}
