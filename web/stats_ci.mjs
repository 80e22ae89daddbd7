// stats_ci.mjs: 95 % intervals for the page's accuracies (issue 17), plain functions, no DOM.
//
// wilson(k, n): the Wilson score interval of a proportion k/n (Wilson 1927; Agresti & Coull 1998 recommend
//   it over the normal "Wald" interval, which breaks down near 0 and 1). { p, lo, hi }.
// pairedBootstrap(a, b, { reps, seed }): the difference mean(b) - mean(a) of two 0/1 scores of the same
//   images (before/after), with the percentile interval of `reps` bootstrap resamples of the images
//   (seeded, so the page shows the same interval for the same scores). { diff, lo, hi, n, onlyA, onlyB }.

import { mulberry32 } from './crops.mjs';

const Z95 = 1.959963984540054;

export function wilson(k, n, z = Z95) {
  if (!(n > 0) || k < 0 || k > n) throw new Error(`bnlab: wilson: need 0 <= k <= n and n > 0 (got k=${k}, n=${n})`);
  const p = k / n, z2 = z * z, den = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / den;
  const half = (z / den) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  // at k = 0 and k = n the bound is exactly 0 or 1 (rounding would leave 1 - 1e-16)
  return { p, lo: k === 0 ? 0 : Math.max(0, centre - half), hi: k === n ? 1 : Math.min(1, centre + half) };
}

// mulberry32 (web/crops.mjs): a small seeded generator, enough for resampling indices
const rng = mulberry32;

export function pairedBootstrap(a, b, { reps = 2000, seed = 17 } = {}) {
  const n = a.length;
  if (!n || b.length !== n) throw new Error(`bnlab: pairedBootstrap: two score lists of the same non-zero length (got ${a.length}, ${b.length})`);
  // only the images where the two differ move the difference: +1 (right only after), -1 (right only before)
  const d = new Int8Array(n);
  let onlyA = 0, onlyB = 0;
  for (let i = 0; i < n; i++) {
    d[i] = (b[i] ? 1 : 0) - (a[i] ? 1 : 0);
    if (d[i] < 0) onlyA++;
    else if (d[i] > 0) onlyB++;
  }
  const diff = (onlyB - onlyA) / n;
  const r = rng(seed), stats = new Float64Array(reps);
  for (let t = 0; t < reps; t++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[(r() * n) | 0];
    stats[t] = s / n;
  }
  stats.sort();
  const q = (f) => stats[Math.min(reps - 1, Math.max(0, Math.round(f * (reps - 1))))];
  return { diff, lo: q(0.025), hi: q(0.975), n, onlyA, onlyB };
}
