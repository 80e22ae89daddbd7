// channel_view.mjs: one BatchNorm channel over one batch, the normalization spelled out (pure; the
// worker calls it with what model.bnInput returned, the page draws the result: web/panel_channel.mjs).
//
// x: the channel's values before BatchNorm (N*H*W of them), gamma, beta, eps, and the running mean and
// variance. Train mode normalizes with the batch's own mean and biased variance, eval mode with the
// running ones; both are computed here in float64 from x, so they are exactly what the formula says.
// Returns { n, gamma, beta, eps, train: { mean, var }, eval: { mean, var }, stages } where stages is
// { pre, normTrain, normEval, outTrain, outEval }, each { lo, hi, counts (bins), mean, std }; the two
// modes of one stage share lo/hi so their histograms can be compared side by side.
export function channelView({ values, gamma, beta, eps, runningMean, runningVar, bins = 30 }) {
  const n = values.length;
  if (!n) throw new Error('bnlab: channelView: no values');
  let s = 0;
  for (let i = 0; i < n; i++) s += values[i];
  const mB = s / n;
  let q = 0;
  for (let i = 0; i < n; i++) q += (values[i] - mB) ** 2;
  const vB = q / n;   // biased, as BatchNorm normalizes with
  const mR = runningMean, vR = Math.max(runningVar, 0);
  // plain indexed loops: Float64Array.from with a callback and .map took ~0.15 s for a batch of 32 at 112x112
  const norm = (m, v) => {
    const k = 1 / Math.sqrt(v + eps), out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = (values[i] - m) * k;
    return out;
  };
  const normTrain = norm(mB, vB), normEval = norm(mR, vR);
  const affine = (a) => {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = gamma * a[i] + beta;
    return out;
  };
  const outTrain = affine(normTrain), outEval = affine(normEval);
  const pair = (a, b) => {
    let lo = Infinity, hi = -Infinity;
    for (const arr of b ? [a, b] : [a])
      for (let i = 0; i < arr.length; i++) { const v = arr[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    return b ? [hist(a, lo, hi, bins), hist(b, lo, hi, bins)] : [hist(a, lo, hi, bins)];
  };
  const [pre] = pair(values);
  const [nT, nE] = pair(normTrain, normEval), [oT, oE] = pair(outTrain, outEval);
  return {
    n, gamma, beta, eps, train: { mean: mB, var: vB }, eval: { mean: mR, var: vR },
    stages: { pre, normTrain: nT, normEval: nE, outTrain: oT, outEval: oE },
  };
}

function hist(a, lo, hi, bins) {
  const counts = new Array(bins).fill(0), w = (hi - lo) / bins;
  let s = 0, q = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / w)))]++;
    s += v;
  }
  const mean = s / a.length;
  for (let i = 0; i < a.length; i++) q += (a[i] - mean) ** 2;
  return { lo, hi, counts, mean, std: Math.sqrt(q / a.length) };
}
