// panel_probe.mjs: (4) one image, eval mode against train mode (alone, and inside the batch):
// the top-5 class names and probabilities, data-testid="top5".
import { $, P } from './page.mjs';

// One column of class names with probability bars (data-testid="top5" lists): items [{ k, p }] in
// order, the class `truth` marked, fmt(p) the printed value. The coupling panel draws its columns
// with it too.
export function probeColumn(cls, title, items, nameOf, truth, fmt) {
  const col = document.createElement('div');
  col.className = `probe-col ${cls}`;
  const h = document.createElement('h3');
  h.textContent = title;
  const list = document.createElement('div');
  list.className = 'top5';
  for (const { k, p } of items) {
    const n = document.createElement('span');
    n.className = 'name' + (k === truth ? ' truth' : '');
    n.textContent = nameOf(k);
    n.title = `${nameOf(k)}: ${(100 * p).toFixed(2)}%`;
    const bar = document.createElement('i');
    bar.style.width = `${Math.max(1, 100 * p).toFixed(1)}%`;
    n.prepend(bar);
    const pv = document.createElement('span');
    pv.className = 'p';
    pv.textContent = fmt(p);
    list.append(n, pv);
  }
  col.append(h, list);
  return col;
}

// (4) one image, eval vs train mode
export function drawProbe(r) {
  const labels = P.model.info.labels;
  const dsNames = (P.model.dataset && P.model.dataset.names) || [];
  // the true class is marked only when the model's classes are the dataset's (trained on it)
  const sameClasses = !!labels && labels.every((l, k) => l === dsNames[k]);
  const nameOf = (k) => (labels && labels[k] != null ? labels[k] : `class ${k}`);
  const truth = r.probe.label != null && sameClasses ? r.probe.label : null;
  $('probe-label').textContent = r.probe.name ? `${r.probe.fromUser ? 'your photo' : 'photo'}: ${r.probe.name}`
    : `${r.source === 'fashion-mnist' ? 'Fashion-MNIST' : 'procedural'}: ${dsNames[r.probe.label] ?? r.probe.label}`;
  const cols = [
    ['eval', 'eval, alone', r.probe.eval],
    ['train', 'train, alone (B = 1)', r.probe.trainAlone],
    ['train', `train, in the batch of ${r.B}`, r.probe.trainBatch],
  ].filter((c) => c[2]); // train alone: null where B = 1 is undefined (r.probe.trainAloneError)
  const box = $('probe-cols');
  box.replaceChildren();
  for (const [cls, title, top] of cols)
    box.appendChild(probeColumn(cls, title, top, nameOf, truth, (p) => `${(100 * p).toFixed(p < 0.1 ? 1 : 0)}%`));
  const panel = $('probe-panel');
  panel.dataset.evalTop1 = String(r.probe.eval[0].k);
  panel.dataset.trainTop1 = String(r.probe.trainBatch[0].k);
  box.dataset.names = JSON.stringify(r.probe.eval.map(({ k }) => nameOf(k)));
  box.dataset.p = JSON.stringify(r.probe.eval.map(({ p }) => +p.toFixed(6)));
}
