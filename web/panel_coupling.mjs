// panel_coupling.mjs: "how the batch couples images" (issue 17). One image of the page's batch stays; the
// other B-1 images are swapped for others ("swap the others", seeded: swap k draws batch k of its own stream).
// The worker's `couple` command scores the batch in train mode (BatchNorm with this batch's statistics) and
// in eval mode (running statistics) and returns the chosen image's logits: in train mode they move with the
// other images, in eval mode they are bit for bit the same. Drawn: the chosen image's class probabilities in
// both modes after the latest swap, and the probability of eval mode's top class over the swaps.
//
// initCouplingPanel(deps): deps { $, call, renderPlot, COLORS, getSettings, getModel, fail, ready }.
// couplingModelChanged(): app.mjs calls it when a model is shown (the history is forgotten).
// #coupling-panel's data-history (JSON) holds every swap: { swap, train, eval (logits), inputSum, batchSum }.

import { probeColumn } from './panel_probe.mjs';

let D = null;
let history = [];   // one entry per swap of the current (model, seed, B, image)
let key = '';

export function initCouplingPanel(deps) {
  D = deps;
  D.$('couple-swap').addEventListener('click', () => swap());
  D.$('couple-image').addEventListener('change', () => { history = []; key = ''; draw(); });
  // dimmed while the page's batch (size, seed) is not the one the swaps started from
  for (const ev of ['change', 'input', 'click']) document.addEventListener(ev, () => setTimeout(markStale, 0));
  draw();
}

const keyOf = (s, image) => JSON.stringify([D.getModel() && D.getModel().name, s.seed, s.batchSize, image]);
function markStale() {
  const panel = D.$('coupling-panel'), h = history[history.length - 1];
  const stale = !!h && keyOf(D.getSettings(), h.image) !== key;
  panel.classList.toggle('stale', stale);
  panel.dataset.stale = String(stale);
}

export function couplingModelChanged() {
  history = [];
  key = '';
  if (D) { draw(); markStale(); }
}

function softmax(z) {
  const m = Math.max(...z), e = z.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// Asks for swap 0 (the batch as the other panels show it) when the batch or image changed, then the next swap.
async function swap() {
  const { $, call, fail } = D, s = D.getSettings();
  const B = s.batchSize;
  const pick = $('couple-image');
  pick.max = String(B - 1);
  const image = Math.min(B - 1, Math.max(0, Math.round(Number(pick.value)) || 0));
  pick.value = String(image);
  if (B < 2) { $('couple-note').textContent = 'a batch of 1 has no other images to swap: choose B ≥ 2'; return; }
  $('couple-note').textContent = '';
  const k = keyOf(s, image);
  if (k !== key) { history = []; key = k; }
  try {
    const want = history.length ? [history[history.length - 1].swap + 1] : [0, 1];
    for (const n of want) {
      const channel = Math.max(0, Math.round(Number($('channel-pick').value)) || 0);   // the channel view's channel
      const r = await call('couple', { seed: s.seed, batchSize: B, image, swap: n, channel },
        { label: `busy: batch of ${B}, image ${image} kept, ${n ? `others swapped (${n})` : 'as drawn'}…` });
      if (k !== key) return;   // the batch changed meanwhile
      history.push(r);
      draw();
      markStale();
    }
    D.ready();
  } catch (e) {
    fail('swap the others', e, 'couple');
  }
}

function draw() {
  const { $, renderPlot, COLORS } = D;
  const panel = $('coupling-panel');
  const model = D.getModel();
  const labels = model && model.info.labels;
  const nameOf = (k) => (labels && labels[k] != null ? labels[k] : `class ${k}`);
  const pct = (p) => `${(100 * p).toFixed(p < 0.1 ? 1 : 0)}%`;
  panel.dataset.history = JSON.stringify(history.map((h) => ({ swap: h.swap, train: h.train, eval: h.eval, inputSum: h.inputSum, batchSum: h.batchSum,
    stemTrain: h.stem ? h.stem.train : null, stemEval: h.stem ? h.stem.eval : null })));
  drawStem();
  panel.dataset.swaps = String(Math.max(0, history.length - 1));
  const box = $('couple-cols');
  box.replaceChildren();
  if (!history.length) {
    $('couple-readout').textContent = 'Press "swap the others": the chosen image stays, the rest of the batch is replaced.';
    renderPlot($('plot-couple'), { height: 160, x: { type: 'lin', min: 0, max: 4, label: 'swap (0: the batch as drawn)', integer: true },
      y: { type: 'lin', min: 0, max: 1, exact: true, label: 'probability' }, empty: 'press swap the others' });
    return;
  }
  const last = history[history.length - 1], first = history[0];
  const pT = softmax(last.train), pE = softmax(last.eval);
  // the classes shown: eval mode's top 5 (eval does not move), plus train mode's top class if it is not among them
  const order = pE.map((p, k) => k).sort((a, b) => pE[b] - pE[a]).slice(0, 5);
  const topT = pT.indexOf(Math.max(...pT));
  if (!order.includes(topT)) order.push(topT);
  for (const [cls, title, p] of [['train', 'train mode (batch statistics)', pT], ['eval', 'eval mode (running statistics)', pE]])
    box.appendChild(probeColumn(cls, title, order.map((k) => ({ k, p: p[k] })), nameOf, last.label, pct));
  const c = $('couple-thumb');
  c.width = last.W;
  c.height = last.H;
  c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(last.thumb), last.W, last.H), 0, 0);
  // over the swaps: the probability of eval mode's top class, both modes
  const top = order[0];
  const tr = history.map((h) => [h.swap, softmax(h.train)[top]]), ev = history.map((h) => [h.swap, softmax(h.eval)[top]]);
  renderPlot($('plot-couple'), {
    height: 160,
    title: `Probability of ${nameOf(top)} for image ${last.image} over ${history.length - 1} swaps of the other images: ` +
      `train mode ${tr.map((p) => pct(p[1])).join(', ')}; eval mode ${ev.map((p) => pct(p[1])).join(', ')}`,
    x: { type: 'lin', min: 0, max: Math.max(4, last.swap), label: 'swap (0: the batch as drawn)', integer: true },
    y: { type: 'lin', min: 0, max: 1, exact: true, label: `p(${nameOf(top)})`, format: (v) => `${Math.round(v * 100)}%` },
    // eval mode drawn last (dashed, hollow dots): where the two coincide its flat line stays visible
    series: [
      { kind: 'line', points: tr, color: COLORS.batch, width: 1.6 },
      { kind: 'dots', points: tr, color: COLORS.batch, r: 3, hover: (p) => `swap ${p[0]}: train mode ${pct(p[1])}` },
      { kind: 'line', points: ev, color: COLORS.eval, width: 1.6, dash: '5 3' },
      { kind: 'dots', points: ev, color: COLORS.eval, r: 3.5, hollow: true, hover: (p) => `swap ${p[0]}: eval mode ${pct(p[1])}` },
    ],
    legend: [{ label: 'train mode', color: COLORS.batch }, { label: 'eval mode', color: COLORS.eval, kind: 'line', dash: '5 3' }],
  });
  // how far each mode moved from the batch as drawn: largest change of a probability, and bitwise equality
  const moved = (m) => Math.max(...history.map((h) => Math.max(...softmax(h[m]).map((p, k) => Math.abs(p - softmax(first[m])[k])))));
  const sameBits = history.every((h) => h.eval.every((v, k) => Object.is(v, first.eval[k])));
  const topsT = new Set(history.map((h) => h.train.indexOf(Math.max(...h.train))));
  $('couple-readout').innerHTML = `Image ${last.image} of a batch of ${last.B}, ${history.length - 1} swaps of the other ${last.B - 1}: ` +
    `train mode's probabilities moved by up to <b>${(100 * moved('train')).toFixed(1)} points</b>` +
    `${topsT.size > 1 ? ` and its top class changed (${[...topsT].map(nameOf).join(', ')})` : ''}; ` +
    `eval mode's ${sameBits ? '<b>did not move: the same bits every time</b>' : `moved by up to ${(100 * moved('eval')).toFixed(3)} points`}.`;
  panel.dataset.evalSameBits = String(sameBits);
}

// The kept image's channel at the stem after normalizing, as two small grey maps on one scale (black −3,
// mid-grey 0, white +3; grey keeps the page's colours for their meanings), and the mean of its values
// after each swap in words.
function paint(canvas, side, values) {
  canvas.width = side;
  canvas.height = side;
  const ctx = canvas.getContext('2d'), img = ctx.createImageData(side, side);
  values.forEach((v, i) => {
    const g = Math.round(127.5 + 127.5 * Math.max(-1, Math.min(1, v / 3)));
    img.data[i * 4] = img.data[i * 4 + 1] = img.data[i * 4 + 2] = g;
    img.data[i * 4 + 3] = 255;
  });
  ctx.putImageData(img, 0, 0);
}

function drawStem() {
  const { $ } = D;
  const box = $('couple-stem');
  const last = history[history.length - 1], st = last && last.stem;
  box.hidden = !st;   // none yet, or a model whose normalization is not plain BatchNorm (see its panel)
  if (!st) return;
  if (st.side) { paint($('couple-stem-train'), st.side, st.train); paint($('couple-stem-eval'), st.side, st.eval); }
  const avg = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  const f = (v) => (v < 0 ? `−${Math.abs(v).toFixed(3)}` : v.toFixed(3));
  const tr = history.map((h) => f(avg(h.stem.train))), ev = history.map((h) => f(avg(h.stem.eval)));
  $('couple-stem-text').innerHTML = `At the stem (${st.layer}), channel ${st.channel} (the channel view's), this image's ${st.train.length} values ` +
    `after normalizing. Their mean, swap by swap: train mode <b>${tr.join(', ')}</b> (the batch's mean and variance of the channel change ` +
    `with the other images: now ${f(st.batchMean)} and ${st.batchVar.toPrecision(3)}); eval mode <b>${ev.join(', ')}</b> ` +
    `(running ${f(st.runningMean)} and ${st.runningVar.toPrecision(3)}, whatever the batch).`;
}
