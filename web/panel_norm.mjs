// The normalization panel (issue 14): what the chosen layer's normalization kind computes, from the
// worker's run() result (r.norm: { kind, train, eval } with model.normStats of the train-mode and the
// eval-mode forward of the same batch). Plain DOM, no state; app.mjs calls drawNorm(el, r, nameOf).

const BATCH_DEPENDENT = { batch: true, renorm: true, ghost: true, group: false, frozen: false, none: false };

const NOTES = {
  batch: 'BatchNorm: train mode normalizes with this batch\'s own mean and variance, eval mode with the running ' +
    'statistics, so train-mode answers depend on the other images of the batch.',
  frozen: 'Frozen BatchNorm: the running statistics are used in training too and never updated, so train and ' +
    'eval mode compute the same function and no answer depends on the batch.',
  none: 'No normalization: each layer is a per-channel scale and shift, the same in train and eval mode; no answer ' +
    'depends on the batch.',
  group: 'GroupNorm: mean and variance per image and per group of channels over H×W. The statistics are the same in ' +
    'train and eval mode, whatever the batch (no running statistics): no answer depends on the batch.',
  renorm: 'Batch Renormalization: train mode uses the batch statistics, corrected by r = σ_B/σ_run and ' +
    'd = (μ_B − μ_run)/σ_run, clipped to [1/r_max, r_max] and [−d_max, d_max]. Unclipped, the correction turns the ' +
    'batch normalization into the running one; where r or d is clipped train-mode answers depend on the batch. ' +
    'Eval mode uses the running statistics.',
  ghost: 'Ghost BatchNorm: train mode normalizes each virtual batch of V images with its own statistics, so an ' +
    'image\'s train-mode answer depends on the other images of its virtual batch; eval mode uses the running ' +
    'statistics (moved by the virtual batches\' average).',
};

export function normKind(norm) {
  return String(norm || 'batch').split(':')[0];
}

function table(head, rows) {
  const t = document.createElement('table');
  t.className = 'norm-table';
  const tr = document.createElement('tr');
  for (const h of head) { const th = document.createElement('th'); th.textContent = h; tr.appendChild(th); }
  t.appendChild(tr);
  for (const row of rows) {
    const r = document.createElement('tr');
    for (const c of row) { const td = document.createElement('td'); td.textContent = c; r.appendChild(td); }
    t.appendChild(r);
  }
  return t;
}

const f3 = (v) => (Number.isFinite(v) ? v.toFixed(3) : String(v));

function sameTop5(a, b) {
  return a.length === b.length && a.every((x, i) => x.k === b[i].k && Math.abs(x.p - b[i].p) < 1e-4);
}

// el: the panel's body; r: the run result (r.norm, r.probe, r.layer, r.B, r.mode)
export function drawNorm(el, r) {
  el.replaceChildren();
  const n = r.norm || { kind: 'batch' };
  const kind = normKind(n.kind);
  const p = (text, cls) => { const e = document.createElement('p'); e.textContent = text; if (cls) e.className = cls; el.appendChild(e); return e; };
  el.dataset.kind = kind;
  p(`Layer ${r.layer}: ${n.kind}. ${NOTES[kind] || ''}`, 'norm-note');
  const shown = 8;
  if (kind === 'group' && n.train) {
    const s = n.train, G = s.groups, N = Math.min(s.images, shown);
    const rows = [];
    for (let i = 0; i < N; i++) {
      for (let g = 0; g < G; g++) {
        const ev = n.eval ? f3(n.eval.groupMean[i * G + g]) : '—';
        rows.push([`image ${i}`, `group ${g}`, f3(s.groupMean[i * G + g]), ev, f3(s.groupVar[i * G + g])]);
      }
    }
    el.appendChild(table(['image', 'group', 'mean (train mode)', 'mean (eval mode)', 'variance'], rows));
    if (n.eval) {
      let d = 0;
      for (let i = 0; i < s.groupMean.length; i++) d = Math.max(d, Math.abs(s.groupMean[i] - n.eval.groupMean[i]));
      el.dataset.maxTrainEvalDiff = String(d);
      p(`Largest |train − eval| group mean over the ${s.images} images: ${d.toExponential(2)}` +
        ` (the first ${N} images shown).`, 'norm-diff');
    }
  } else if (kind === 'renorm' && n.train) {
    const s = n.train, rows = [];
    for (let c = 0; c < s.channels; c++) rows.push([`${c}`, f3(s.r[c]), f3(s.d[c])]);
    el.appendChild(table(['channel', 'r', 'd'], rows));
    el.dataset.channels = String(s.channels);
  } else if (kind === 'ghost' && n.train) {
    const s = n.train, C = s.channels, Cs = Math.min(C, shown), rows = [];
    for (let v = 0; v < s.virtualBatches; v++) {
      const row = [`virtual batch ${v}`];
      for (let c = 0; c < Cs; c++) row.push(f3(s.virtualMean[v * C + c]));
      rows.push(row);
    }
    el.appendChild(table(['', ...Array.from({ length: Cs }, (_, c) => `mean ch ${c}`)], rows));
    el.dataset.virtualBatches = String(s.virtualBatches);
    p(`${s.virtualBatches} virtual batch(es) in this batch of ${r.B}; the first ${Cs} of ${C} channels.`, 'norm-diff');
  } else if (kind === 'group' || kind === 'renorm' || kind === 'ghost') {
    p('Run a batch to see this layer\'s statistics.');
  }
  if (r.probe) {
    const same = sameTop5(r.probe.eval, r.probe.trainBatch);
    el.dataset.probeSame = String(same);
    el.dataset.batchDependent = String(!!BATCH_DEPENDENT[kind]);
    p(`The probe image: eval-mode top-5 and train-mode top-5 inside the batch of ${r.B} are ` +
      (same ? 'the same' : 'different') + (BATCH_DEPENDENT[kind]
        ? ` (${kind} can depend on the batch in train mode).`
        : ` (${kind}: no answer depends on the batch).`), 'norm-probe');
  }
}
