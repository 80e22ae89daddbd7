// panel_precise_acc.mjs: PreciseBN's held-out accuracy, before and after, with 95 % intervals (issue 17).
// The worker's `precise` scores the same held-out images before and after (Fashion-MNIST: its held-out 2,000;
// procedural: images of the held-out stream) and returns a 0/1 per image; this shows each accuracy with its
// Wilson interval and the change with a paired bootstrap interval (web/stats_ci.mjs), and says whether the
// change is distinguishable from none. Data for scripts and tests: data-acc-* on #precise-panel.
//
// preciseHeldOutN($): the number of held-out images the user chose. preciseAccModelChanged($, model): a
// smaller default on slow models, and the old numbers cleared. drawPreciseAccuracy($, r, kind): after a run.
import { wilson, pairedBootstrap } from './stats_ci.mjs';

export const preciseHeldOutN = ($) => Number($('precise-n').value) || 2000;

export function preciseAccModelChanged($, model) {
  const slow = model && model.msPerImage * 2000 * 2 > 20000;   // both scorings past ~20 s: 1,000 images
  $('precise-n').value = slow ? '1000' : '2000';
  $('precise-n').disabled = !model || !(model.source.kind === 'procedural' || model.source.kind === 'fashion-mnist');
  $('precise-acc').replaceChildren();
  for (const k of Object.keys($('precise-panel').dataset)) if (k.startsWith('acc')) delete $('precise-panel').dataset[k];
}

const pct = (v) => `${(100 * v).toFixed(1)} %`;
const pts = (v) => `${v > 0 ? '+' : v < 0 ? '−' : '±'}${Math.abs(100 * v).toFixed(1)}`;

export function drawPreciseAccuracy($, r, kind) {
  const el = $('precise-acc'), panel = $('precise-panel');
  el.replaceChildren();
  if (!r.heldOut || !r.correctBefore) {
    el.textContent = 'No accuracy: photos have no labels of this model\'s classes.';
    return;
  }
  const n = r.heldOut, kb = r.correctBefore.reduce((a, v) => a + v, 0), ka = r.correctAfter.reduce((a, v) => a + v, 0);
  const wb = wilson(kb, n), wa = wilson(ka, n), d = pairedBootstrap(r.correctBefore, r.correctAfter);
  const verdict = d.lo > 0 ? 'PreciseBN raised it (the interval of the change is above 0)'
    : d.hi < 0 ? 'PreciseBN lowered it (the interval of the change is below 0)'
    : 'not distinguishable from no change (the interval of the change contains 0)';
  const p = document.createElement('p');
  p.className = 'readout';
  p.innerHTML = `Eval accuracy on <b>${n.toLocaleString('en')}</b> held-out ${kind} images, the same before and after: ` +
    `${pct(wb.p)} <span class="ci">[${pct(wb.lo)}, ${pct(wb.hi)}]</span> → <b>${pct(wa.p)}</b> <span class="ci">[${pct(wa.lo)}, ${pct(wa.hi)}]</span>; ` +
    `change <b>${pts(d.diff)} points</b> <span class="ci">[${pts(d.lo)}, ${pts(d.hi)}]</span>: ${verdict}. ` +
    `Brackets: 95 % intervals (Wilson for each accuracy; for the change a paired bootstrap over the images: ` +
    `${d.onlyA} right only before, ${d.onlyB} right only after).`;
  el.appendChild(p);
  Object.assign(panel.dataset, {
    accN: String(n), accBefore: String(wb.p), accBeforeLo: String(wb.lo), accBeforeHi: String(wb.hi),
    accAfter: String(wa.p), accAfterLo: String(wa.lo), accAfterHi: String(wa.hi),
    accDiff: String(d.diff), accDiffLo: String(d.lo), accDiffHi: String(d.hi),
  });
}
