// panel_channel.mjs: "one channel, normalized" — the page's view of BatchNorm's formula on live numbers.
// Pick a channel (the number field, or click a dot in the batch-vs-running plots): the worker's
// `channel` command returns that channel's values over the current batch before BatchNorm
// (model.bnInput) and web/channel_view.mjs's histograms; this draws them before BatchNorm, after
// normalizing and after gamma/beta, train mode (batch statistics) beside eval mode (running ones),
// with y = gamma*(x - mean)/sqrt(var + eps) + beta written out with the numbers used.
//
// initChannelPanel(deps) wires it; deps: { $, call, renderPlot, COLORS, getRun, getModel, fail, ready }.
// showChannel() redraws for the current run (app.mjs calls it after each run).

let D = null;
let last = null;   // the worker's last answer (for scripts: lastChannel())
export const lastChannel = () => last;
const num = (v) => {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
};

export function initChannelPanel(deps) {
  D = deps;
  const { $ } = D;
  $('channel-show').addEventListener('click', () => showChannel());
  $('channel-pick').addEventListener('change', () => showChannel());
  // a click on a dot of the batch-vs-running plots picks its channel (the hover text names it)
  for (const id of ['plot-mean', 'plot-var']) {
    $(id).addEventListener('click', (ev) => {
      const c = channelAt($(id), ev);
      if (c == null) return;
      $('channel-pick').value = String(c);
      showChannel();
      $('channel-panel').scrollIntoView({ block: 'nearest' });
    });
  }
}

// The channel of the hover point nearest the click (within 24 px), or null.
function channelAt(container, ev) {
  const pts = container._hover || [], svg = container.querySelector('svg');
  if (!svg || !pts.length) return null;
  const box = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal, k = vb.width / box.width;
  const x = (ev.clientX - box.left) * k, y = (ev.clientY - box.top) * k;
  let best = null, bd = 24 * k;
  for (const [px, py, text] of pts) {
    const d = Math.hypot(px - x, py - y);
    if (d < bd) { bd = d; best = text; }
  }
  const m = best && /channel (\d+)/.exec(best);
  return m ? Number(m[1]) : null;
}

// The channel the picker asks for (the run computes its view in the same forward: see showChannel).
export function pickedChannel() {
  const c = Math.round(Number(D ? D.$('channel-pick').value : 0));
  return Number.isFinite(c) && c >= 0 ? c : 0;
}

// fromRun: the view the run's own forward computed (model.forwardBnInput), used when it is of this
// run's batch, layer and channel; otherwise the worker's `channel` command computes it.
export async function showChannel(fromRun = null) {
  const { $, call, fail } = D, r = D.getRun();
  if (!r) return;
  const C = r.channels;
  const pick = $('channel-pick');
  pick.max = String(C - 1);
  let c = Math.round(Number(pick.value));
  if (!Number.isFinite(c) || c < 0) c = 0;
  if (c > C - 1) c = C - 1;
  pick.value = String(c);
  const note = $('channel-note');
  const norm = D.getModel() && D.getModel().info.norm;
  if (norm && norm !== 'batch') {
    note.textContent = `this model's normalization is '${norm}', not BatchNorm: the view below shows what plain BatchNorm would do with this channel's values`;
  } else note.textContent = '';
  if (fromRun && fromRun.layer === r.layer && fromRun.channel === c && fromRun.seed === r.seed && fromRun.B === r.B) {
    last = { ...fromRun, fromRun: true };
    draw(last);
    return;
  }
  try {
    const v = await call('channel', { seed: r.seed, batchSize: r.B, layer: r.layer, channel: c }, { label: `busy: ${r.layer} channel ${c}…` });
    last = v;
    draw(v);
    D.ready();
  } catch (e) {
    if (!e.cancelled) fail('channel', e, 'channel');
  }
}

function draw(v) {
  const { $, renderPlot, COLORS } = D;
  const panel = $('channel-panel');
  const bars = (h, color, title) => {
    const w = (h.hi - h.lo) / h.counts.length;
    // hover: which values the bar counts, of which layer and channel
    const hover = (p, i) => `${v.layer} channel ${v.channel}, ${title.split(':')[0]}: ${h.counts[i]} of ${v.n} values in [${num(h.lo + i * w)}, ${num(h.lo + (i + 1) * w)})`;
    return {
      height: 130, title,
      x: { type: 'lin', min: h.lo, max: h.hi, exact: true },
      y: { type: 'lin', min: 0, max: Math.max(...h.counts), label: 'count', integer: true, nticks: 3 },
      series: [{ kind: 'bars', points: h.counts.map((n, i) => [h.lo + (i + 0.5) * w, n]), barWidth: w * 0.92, color, hover }],
    };
  };
  const S = v.stages, desc = (h) => `mean ${num(h.mean)}, std ${num(h.std)}`;
  const cap = (id, text) => { $(id).textContent = text; };
  renderPlot($('ch-pre-train'), bars(S.pre, COLORS.before, `values before BatchNorm: ${desc(S.pre)}`));
  renderPlot($('ch-pre-eval'), bars(S.pre, COLORS.before, `values before BatchNorm: ${desc(S.pre)}`));
  renderPlot($('ch-norm-train'), bars(S.normTrain, COLORS.batch, `train mode, normalized with the batch statistics: ${desc(S.normTrain)}`));
  renderPlot($('ch-norm-eval'), bars(S.normEval, COLORS.running, `eval mode, normalized with the running statistics: ${desc(S.normEval)}`));
  renderPlot($('ch-out-train'), bars(S.outTrain, COLORS.batch, `train mode, after gamma and beta: ${desc(S.outTrain)}`));
  renderPlot($('ch-out-eval'), bars(S.outEval, COLORS.running, `eval mode, after gamma and beta: ${desc(S.outEval)}`));
  cap('ch-pre-train-cap', `x before BatchNorm (${v.n} values: ${v.B} images × positions): ${desc(S.pre)}`);
  cap('ch-pre-eval-cap', `the same x: ${desc(S.pre)}`);
  cap('ch-norm-train-cap', `(x − μ_B)/√(σ²_B + ε): ${desc(S.normTrain)} (always ≈ 0 and ≈ 1)`);
  cap('ch-norm-eval-cap', `(x − μ_run)/√(σ²_run + ε): ${desc(S.normEval)} (≈ 0 and 1 only when the batch looks like the running statistics)`);
  cap('ch-out-train-cap', `y = γ·x̂ + β: ${desc(S.outTrain)}`);
  cap('ch-out-eval-cap', `y = γ·x̂ + β: ${desc(S.outEval)}`);
  const sub = (m) => (m < 0 ? `x + ${num(-m)}` : `x − ${num(m)}`), add = (b) => (b < 0 ? `− ${num(-b)}` : `+ ${num(b)}`);
  const f = (m, s2) => `y = γ·(x − μ)/√(σ² + ε) + β = ${num(v.gamma)}·(${sub(m)})/√(${num(s2)} + ${num(v.eps)}) ${add(v.beta)}`;
  $('ch-formula-train').textContent = f(v.train.mean, v.train.var);
  $('ch-formula-eval').textContent = f(v.eval.mean, v.eval.var);
  $('channel-title').textContent = `${v.layer} · channel ${v.channel} · batch of ${v.B}`;
  Object.assign(panel.dataset, {
    layer: v.layer, channel: String(v.channel), batchSize: String(v.B), n: String(v.n),
    gamma: String(v.gamma), beta: String(v.beta), eps: String(v.eps),
    trainMean: String(v.train.mean), trainVar: String(v.train.var), evalMean: String(v.eval.mean), evalVar: String(v.eval.var),
    normTrainMean: String(S.normTrain.mean), normTrainStd: String(S.normTrain.std),
    normEvalMean: String(S.normEval.mean), normEvalStd: String(S.normEval.std),
    preCount: String(S.pre.counts.reduce((a, b) => a + b, 0)),
  });
  panel.classList.remove('stale');
}
