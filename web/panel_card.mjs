// panel_card.mjs: the model card (data-testid="model-card") and the description of the batches.
import { fmt } from './plot.mjs';
import { $, P, FASHION_SPLIT } from './page.mjs';

// The model card (data-testid="model-card"): what the model is, the input size it runs at, where
// its mean/std and class names came from, what it was trained on, and the threads in use.
export function renderCard(d) {
  const i = d.info, p = i.provenance;
  const depth = i.blocks.reduce((a, b) => a + b, 0) * (i.block === 'bottleneck' ? 3 : 2) + 2;
  const src = (f) => {
    const s = document.createElement('span');
    s.className = `src ${f.from}`;
    s.textContent = f.from === 'file' ? ' · from the file' : ` · assumed: ${f.why}`;
    return s;
  };
  const names = i.labels ? (p.labels.from === 'file' ? `${i.labels.length} names (${i.labels.slice(0, 3).join(', ')}, …)`
    : `the ${i.labels.length} ImageNet class names`) : 'none (numbered)';
  const threads = `${P.lab.threads} ${P.lab.threads === 1 ? 'thread' : 'threads'} (${P.lab.build} build` +
    `${P.lab.relaxed ? ', relaxed-SIMD FMA' : ''})`;
  const rows = [
    ['architecture', `ResNet-${depth}: ${i.block} blocks [${i.blocks.join(', ')}], widths [${i.widths.join(', ')}], ` +
      `${(i.numParams / 1e6).toFixed(i.numParams < 1e6 ? 3 : 1)} M parameters, ${i.bnLayers.length} BatchNorm layers`],
    ['input', `${d.inputH}×${d.inputW}`, [p.inputSize]],
    ['classes', String(i.numClasses)],
    ['class names', names, [p.labels]],
    ['mean / std', `[${i.mean.map(fmt).join(', ')}] / [${i.std.map(fmt).join(', ')}]`, p.mean.from === p.std.from ? [p.mean] : [p.mean, p.std]],
    ['trained on', i.trainData || 'unknown', [p.trainData]],
    ['batches', d.source.kind === 'procedural' ? 'procedural shapes' : d.source.kind === 'fashion-mnist' ? 'Fashion-MNIST test images' : 'photos (random-resized crops)'],
    ['threads', threads],
  ];
  const dl = $('model-card');
  dl.replaceChildren();
  for (const [k, v, fields] of rows) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k;
    const b = document.createElement('b');
    b.textContent = v;
    dd.appendChild(b);
    for (const f of fields || []) dd.appendChild(src(f));
    dl.append(dt, dd);
  }
  const problems = Object.values(p).filter((f) => f.problem).map((f) => f.problem);
  for (const pr of problems) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = 'ignored';
    dd.className = 'problem';
    dd.textContent = `${pr}: the assumption above is used instead`;
    dl.append(dt, dd);
  }
  Object.assign(dl.dataset, {
    inputSize: `${d.inputH}x${d.inputW}`, classes: String(i.numClasses), source: d.source.kind, trainData: i.trainData || '',
    assumed: JSON.stringify(Object.keys(p).filter((k) => p[k].from === 'assumed')), problems: String(problems.length),
    threads: String(P.lab.threads), build: P.lab.build, relaxed: String(!!P.lab.relaxed), kernel: P.lab.kernel || '',
  });
  $('time-threads').textContent = threads;
}

// What the batches are, and why, beside the image controls.
export function showSource(d) {
  const n = d.photos.shipped + d.photos.user;
  $('data-desc').textContent = d.source.kind === 'fashion-mnist'
    ? `Fashion-MNIST test images (what this model was trained on; ${d.dataset.count.toLocaleString('en')} served by this page's server), ` +
      `${d.dataset.classes} classes at ${d.inputH}×${d.inputW}, with their labels. ${FASHION_SPLIT} Your photos go first in the batch (resized and centre-cropped).`
    : d.source.kind === 'procedural'
    ? `Procedural shapes drawn by the wasm build (what this model was trained on), ${d.dataset.classes} classes at ${d.inputH}×${d.inputW}. Your photos go first in the batch (resized and centre-cropped).`
    : `Photos: each batch is random-resized crops with flips (torchvision's RandomResizedCrop recipe) of ${n} photos ` +
      `(${d.photos.shipped} shipped, public domain / CC0${d.photos.user ? `, ${d.photos.user} yours` : ''}), at ${d.inputH}×${d.inputW}. ` +
      `The first image is ${d.photos.probe ? `“${d.photos.probe}”` : 'the probe photo'} resized and centre-cropped. Add your own to the pool:`;
  $('source-note').textContent = d.source.note || '';
  $('source-note').hidden = !d.source.note;
  $('clear-images').disabled = d.photos.user === 0;
}
