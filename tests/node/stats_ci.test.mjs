// web/stats_ci.mjs: the Wilson interval against published values, the paired bootstrap against the
// normal approximation of a paired difference (McNemar's variance), bad input as Errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { wilson, pairedBootstrap } from '../../web/stats_ci.mjs';

const near = (a, b, tol, what) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('Wilson 95 % intervals: 5/10, 0/10, 10/10 (closed form, checked in Python) and 81/263 (Newcombe 1998\'s example, 0.2553-0.3662)', () => {
  const cases = [[5, 10, 0.2366, 0.7634], [0, 10, 0, 0.2775], [10, 10, 0.7225, 1], [81, 263, 0.2553, 0.3662]];
  for (const [k, n, lo, hi] of cases) {
    const w = wilson(k, n);
    near(w.lo, lo, 6e-5, `${k}/${n} lower`);
    near(w.hi, hi, 6e-5, `${k}/${n} upper`);
    assert.equal(w.p, k / n);
    assert.ok(w.lo <= w.p && w.p <= w.hi);
  }
  assert.throws(() => wilson(3, 0), /wilson: need 0 <= k <= n/);
  assert.throws(() => wilson(11, 10), /wilson/);
});

test('paired bootstrap: the difference of two 0/1 score lists, its interval near the normal approximation', () => {
  // 2000 images: 1800 right both times, 60 right only before, 40 right only after, 100 wrong both times
  const a = [], b = [];
  const push = (x, y, m) => { for (let i = 0; i < m; i++) { a.push(x); b.push(y); } };
  push(1, 1, 1800); push(1, 0, 60); push(0, 1, 40); push(0, 0, 100);
  const r = pairedBootstrap(a, b, { reps: 4000, seed: 3 });
  const n = 2000, diff = (40 - 60) / n;
  assert.equal(r.diff, diff);
  assert.equal(r.onlyA, 60);
  assert.equal(r.onlyB, 40);
  // normal approximation: var = ((b + c) / n - diff^2) / n
  const se = Math.sqrt(((60 + 40) / n - diff * diff) / n);
  near(r.lo, diff - 1.96 * se, 0.15 * 1.96 * se, 'lower');
  near(r.hi, diff + 1.96 * se, 0.15 * 1.96 * se, 'upper');
  assert.ok(r.lo <= r.diff && r.diff <= r.hi);
  // seeded: the same interval again
  assert.deepEqual(pairedBootstrap(a, b, { reps: 4000, seed: 3 }), r);
  // no discordant image: the interval is the single point 0
  const same = pairedBootstrap([1, 0, 1], [1, 0, 1]);
  assert.deepEqual([same.diff, same.lo, same.hi], [0, 0, 0]);
  assert.throws(() => pairedBootstrap([1], [1, 0]), /same non-zero length/);
  assert.throws(() => pairedBootstrap([], []), /same non-zero length/);
});
