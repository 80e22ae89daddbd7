// page.mjs: the demo page's shared state, for app.mjs (the wiring) and the panel modules.
//
// P holds what the page knows (the loaded model as the worker describes it, the last run, the long job
// running); ui the controls every panel reads; settings() what they ask for now. hooks are filled by
// app.mjs (requestRun, doRun, showModel) so that a panel can ask for a run without importing app.mjs.
// window.__bnlab (debug) exposes what the page shows to scripts and tests.

export const $ = (id) => document.getElementById(id);

export const debug = (window.__bnlab = { ready: false, runs: 0, last: null, spread: null, model: null, train: [], precise: null, times: {}, errors: [] });

export const P = {
  model: null,     // the worker's describe(): name, info, inputSize, mean, std, dataset
  lab: { threads: 1, build: 'single-thread' },   // what the worker's bnlab reports at init
  lastRun: null,   // the worker's last `run` answer (the layer view may have replaced its layer's statistics)
  longJob: null,   // 'spread' | 'train' | 'precise' while one runs
};

export const hooks = { requestRun: () => {}, doRun: async () => null, showModel: () => {} };

export const ui = {
  mode: $('mode'), batch: $('batch-size'), slider: $('batch-slider'), layer: $('layer'), seed: $('seed'),
  update: $('update-running'), run: $('run'),
};

// Fashion-MNIST models: the page has the test split only (web/worker.mjs cuts it in two)
export const FASHION_SPLIT = 'The page has only the 10,000 test images: batches, the spread, PreciseBN and "train here" use 8,000 of them; held-out accuracy is scored on the other 2,000.';
export const heldOutKind = () => (P.model && P.model.source.kind === 'fashion-mnist' ? 'Fashion-MNIST test' : 'procedural');

let lastValidB = 32;   // an empty or invalid batch field keeps the last valid size (and says so)
export const lastValidBatch = () => lastValidB;
export const setLastValidBatch = (B) => { lastValidB = B; };
export function settings() {
  const raw = ui.batch.value.trim();
  let B = Math.round(Number(raw));
  if (raw === '' || !Number.isFinite(B) || B < 1 || B > 256) B = lastValidB;
  return {
    mode: ui.mode.value === 'eval' ? 'eval' : 'train', batchSize: B, layer: ui.layer.value || 'bn1',
    seed: Math.max(0, Math.floor(Number(ui.seed.value) || 0)), updateRunning: ui.update.checked,
  };
}

export function setControlsEnabled(on) {
  const longJob = P.longJob;
  for (const id of ['run', 'spread-run', 'precise-run', 'train-start', 'reset-model', 'save-model', 'new-batch'])
    if ($(id) && !(longJob && $(id).dataset.stopper === longJob)) $(id).disabled = !on || !!$(id).dataset.na;
  // loading weights or photos waits for a long job: not offered while one runs
  for (const id of ['weights-file', 'image-files', 'image-folder']) {
    $(id).disabled = !on;
    $(id).closest('label').classList.toggle('disabled', !on);
  }
  if ($('model-select')) $('model-select').disabled = !on;   // the model menu too
}
