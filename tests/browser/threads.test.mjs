// The threaded wasm build in a browser: a module Web Worker of the cross-origin-isolated demo
// page (web/serve.mjs sends COOP/COEP) loads web/bnlab.mjs, which starts web/threads/'s pthread
// workers; its logits on the demo model must be bitwise those of the single-thread build.
// node:test + playwright-core + Debian's chromium; skipped without /usr/bin/chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SKIP_NO_CHROMIUM as SKIP, WAIT, launchBrowser, openPage, shutDown, startServer, tid, waitReady } from './helpers.mjs';

let server, url, browser, page;

before(async () => {
  if (SKIP) return;
  ({ proc: server, url } = await startServer());
  browser = await launchBrowser();
  page = await browser.newPage();
  await page.goto(url);
});

after(() => shutDown(browser, server));

// In a module worker: the demo model, eval and train forward of a fixed batch on `threads`.
const WORKER = `
import { createBnLab } from 'ORIGIN/bnlab.mjs';
onmessage = async ({ data: { threads, relaxed } }) => {
  try {
    const lab = await createBnLab({ ...(threads ? { threads } : {}), ...(relaxed !== undefined ? { relaxed } : {}) });
    const bytes = new Uint8Array(await (await fetch('ORIGIN/models/resnet50-procedural.safetensors')).arrayBuffer());
    const m = lab.loadModel(bytes);
    const shape = [8, 64, 64, 3], x = new Float32Array(8 * 64 * 64 * 3);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37);
    m.train();
    const logits = m.forward(x, shape);
    const mean = m.bnStats('bn1').batchMean;
    postMessage({ threads: lab.threads, build: lab.build, relaxed: lab.relaxed, kernel: lab.kernel, logits: Array.from(logits), mean: Array.from(mean),
      isolated: self.crossOriginIsolated, hw: navigator.hardwareConcurrency });
  } catch (e) {
    postMessage({ error: String(e && e.stack || e) });
  }
};`;

async function inWorker(threads, relaxed) {
  return page.evaluate(async ({ src, threads, relaxed }) => {
    const w = new Worker(URL.createObjectURL(new Blob([src.replaceAll('ORIGIN', location.origin)], { type: 'text/javascript' })), { type: 'module' });
    const r = await new Promise((resolve) => { w.onmessage = (e) => resolve(e.data); w.onerror = (e) => resolve({ error: `worker error: ${e.message}` }); w.postMessage({ threads, relaxed }); });
    w.terminate();
    return r;
  }, { src: WORKER, threads, relaxed });
}

test('threaded build in a page worker: threads in use, bitwise the single-thread logits', { skip: SKIP, timeout: WAIT }, async () => {
  assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'the demo server makes the page cross-origin isolated');
  const one = await inWorker(1);
  assert.ifError(one.error);
  assert.equal(one.build, 'simd');
  const def = await inWorker(0);   // the default: every core
  assert.ifError(def.error);
  assert.equal(def.threads, def.hw, 'default threads: navigator.hardwareConcurrency');
  const three = await inWorker(3);
  assert.ifError(three.error);
  for (const r of [def, three]) {
    if (r.threads > 1) assert.equal(r.build, 'simd-threads');
    assert.deepEqual(new Float32Array(r.logits), new Float32Array(one.logits), `logits on ${r.threads} threads`);
    assert.deepEqual(new Float32Array(r.mean), new Float32Array(one.mean), `bn1 batch mean on ${r.threads} threads`);
  }
  assert.equal(three.threads, 3);
  // Chromium runs relaxed SIMD (since 114): the page gets the relaxed files, on every thread count
  for (const r of [one, def, three]) assert.equal(r.kernel, 'gemm_4x8__wasmrelaxed', `${r.threads} thread(s): ${r.kernel}`);
  // the plain files still load when asked for, and agree to rounding (FMA: one rounding, not two)
  const plain = await inWorker(2, false);
  assert.ifError(plain.error);
  assert.equal(plain.relaxed, false);
  const scale = Math.max(...one.logits.map(Math.abs));
  const diff = Math.max(...one.logits.map((v, i) => Math.abs(v - plain.logits[i])));
  assert.ok(diff > 0 && diff < 1e-4 * scale, `relaxed vs plain logits: max difference ${diff} (largest ${scale})`);
  console.log(`# page worker: default ${def.threads} thread(s) (${def.build}, ${def.kernel}), hardwareConcurrency ${def.hw}; ` +
    `relaxed vs plain logits differ by at most ${diff.toExponential(2)}`);
});

test('the page: relaxed-SIMD files by default, the plain ones with ?relaxed=0, and its card says which', { skip: SKIP, timeout: WAIT }, async () => {
  const seen = {};
  for (const q of ['', '&relaxed=0']) {
    const p = await openPage(browser, `${url}?model=resnet50-procedural${q}`);
    try {
      await waitReady(p, WAIT);
      const c = await p.$eval(tid('model-card'), (e) => ({ kernel: e.dataset.kernel, relaxed: e.dataset.relaxed, text: e.innerText }));
      seen[q || 'default'] = c;
    } finally {
      await p.close();
    }
  }
  assert.equal(seen.default.kernel, 'gemm_4x8__wasmrelaxed');
  assert.equal(seen.default.relaxed, 'true');
  assert.match(seen.default.text, /threads\s+\d+ threads? \([^)]*relaxed-SIMD FMA\)/);
  assert.equal(seen['&relaxed=0'].kernel, 'gemm_4x8__wasmsimd');
  assert.equal(seen['&relaxed=0'].relaxed, 'false');
  assert.doesNotMatch(seen['&relaxed=0'].text, /relaxed/);
});
