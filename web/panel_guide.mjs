// panel_guide.mjs: a guided path through the page, one sentence per step, with next/back buttons.
// Each step names the control or panel it is about; that element is outlined (class guide-target)
// and scrolled into view. The steps: mode -> batch size -> the forgotten .eval() -> PreciseBN.
// initGuide($) wires #guide; #guide's data-step is the current step (0-based).

export const STEPS = [
  { target: 'mode', panel: 'stats-panel', title: 'Mode',
    text: 'Train mode normalizes every channel with this batch\'s own mean and variance, eval mode with the running statistics saved from training: switch the mode and watch which series the batch-vs-running plots mark "used".' },
  { target: 'batch-size', panel: 'acc-panel', title: 'Batch size',
    text: 'A batch\'s mean wanders around the running mean by about 1/√B: make B small (2 or 4) and the dots scatter, and the train-mode accuracy in "accuracy against batch size" drops below eval mode\'s.' },
  { target: 'update-running', panel: 'probe-panel', title: 'The forgotten .eval()',
    text: 'Serving a model in train mode makes each image\'s prediction depend on the other images of its batch (compare "alone" with "in the batch"), and with "update running stats" every forward also overwrites what training learned.' },
  { target: 'precise-run', panel: 'precise-panel', title: 'PreciseBN',
    text: 'PreciseBN recomputes the running statistics from many batches with the final weights, so eval mode normalizes with statistics of the data the model now sees; it helps after the weights or the data changed (as after "train here").' },
];

export function initGuide($) {
  let k = 0;
  const show = (scroll) => {
    const s = STEPS[k];
    $('guide-step').textContent = `${k + 1} / ${STEPS.length} · ${s.title}`;
    $('guide-text').textContent = s.text;
    $('guide-back').disabled = k === 0;
    $('guide-next').disabled = k === STEPS.length - 1;
    for (const e of document.querySelectorAll('.guide-target')) e.classList.remove('guide-target');
    for (const id of [s.target, s.panel]) { const e = $(id); if (e) e.classList.add('guide-target'); }
    $('guide').dataset.step = String(k);
    $('guide').dataset.target = s.target;
    if (scroll) { const e = $(s.panel); if (e) e.scrollIntoView({ block: 'nearest' }); }
  };
  $('guide-next').addEventListener('click', () => { if (k < STEPS.length - 1) k++; show(true); });
  $('guide-back').addEventListener('click', () => { if (k > 0) k--; show(true); });
  show(false);
}
