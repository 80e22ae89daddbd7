// precise_layer.mjs: PreciseBN for one layer (the page's "this layer only"), running each batch's
// forward only up to that layer (model.forwardTo) instead of through the whole network.
//
// The merge is the C PreciseBN's (src/model/resnet.c, bnl_precise_bn_add/_end) step for step: per
// batch, Chan's update of (count, mean, M2) in float64 from the layer's float32 batch mean and biased
// variance, counts in images; at the end mean and M2/n rounded to float32. A forwardTo gives bitwise
// the statistics of a full forward up to its layer, so the result is bitwise the C PreciseBN's value
// for that layer (tests/node/precise_layer.test.mjs holds the two together).
//
//   const acc = preciseLayerBegin(C);
//   for (const b of batches) acc.add(model.forwardTo(b.x, b.shape, layer), b.shape[0]);
//   const { mean, variance } = acc.end();   // Float32Array C each, for model.setRunningStats(layer, ...)

export function preciseLayerBegin(C) {
  if (!Number.isInteger(C) || C <= 0) throw new Error(`bnlab: preciseLayerBegin: channels must be a positive integer (got ${C})`);
  const mu = new Float64Array(C), m2 = new Float64Array(C);
  let n = 0, batches = 0;
  return {
    get batches() { return batches; },
    // st: a bnStats() answer after a train-mode forward of nb images (batchMean, batchVar: Float32Array C)
    add(st, nb) {
      if (!st || !st.batchMean || !st.batchVar || st.batchMean.length !== C || st.batchVar.length !== C)
        throw new Error(`bnlab: preciseLayer add: expected the batch statistics of ${C} channels`);
      if (!Number.isInteger(nb) || nb <= 0) throw new Error(`bnlab: preciseLayer add: batch size ${nb}`);
      const na = n, nn = na + nb;
      for (let c = 0; c < C; c++) {
        const d = st.batchMean[c] - mu[c];
        mu[c] += (d * nb) / nn;
        m2[c] += st.batchVar[c] * nb + (d * d * na * nb) / nn;
      }
      n = nn;
      batches++;
    },
    end() {
      if (!batches) throw new Error('bnlab: preciseLayer end: no batches were added');
      const mean = new Float32Array(C), variance = new Float32Array(C);
      for (let c = 0; c < C; c++) {
        mean[c] = mu[c];
        const v = m2[c] / n;
        variance[c] = v > 0 ? v : 0;
        if (!Number.isFinite(mean[c]) || !Number.isFinite(variance[c]))
          throw new Error('bnlab: preciseLayer end: non-finite statistics (the activations overflow float32)');
      }
      return { mean, variance };
    },
  };
}
