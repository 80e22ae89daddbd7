// Browser test of the page's normalization panel (issue 14): each model of demo-models/norms/ is in the model
// menu, `?model=norms/KIND` loads it, and the panel (web/panel_norm.mjs, data-testid="norm-panel") follows the
// kind: GroupNorm's per-image group statistics (equal in the train- and eval-mode forward), Renorm's r and d per
// channel (within the clipping bounds), Ghost's virtual batches (B / V of them), the notes for BatchNorm, frozen and
// none, and the probe's eval-versus-train top-5 (the same for group, frozen and none).
//
//   node --test tests/browser/norms_page.test.mjs     (skipped without chromium or the models)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT, SKIP_NO_CHROMIUM, WAIT, launchBrowser, openPage, runAfter, shutDown, startServer, tid, waitReady } from './helpers.mjs';

const KINDS = ['batch', 'group', 'renorm', 'ghost', 'frozen', 'none'];
const SKIP = SKIP_NO_CHROMIUM ||
  (KINDS.some((k) => !existsSync(path.join(ROOT, 'demo-models', 'norms', `${k}.safetensors`))) ? 'demo-models/norms/ is incomplete' : false);

let browser, server, base;
before(async () => {
  if (SKIP) return;
  ({ proc: server, url: base } = await startServer());
  browser = await launchBrowser();
});
after(() => shutDown(browser, server));

const panel = (page) => page.evaluate(() => {
  const e = document.querySelector('[data-testid="norm-panel"] #norm-body');
  const rows = [...e.querySelectorAll('table tr')].slice(1).map((tr) => [...tr.children].map((td) => td.textContent));
  return { ...e.dataset, text: e.innerText, rows };
});

async function open(kind) {
  const errors = [];
  const page = await openPage(browser, `${base}?model=norms/${kind}`, { errors, consoleErrors: false });
  await page.waitForFunction(() => window.__bnlab.runs > 0, null, { timeout: WAIT });
  await waitReady(page);
  // a train-mode batch of 8 (Ghost: two virtual batches of 4)
  if (await page.$eval(tid('mode'), (e) => e.value) !== 'train') await runAfter(page, () => page.selectOption(tid('mode'), 'train'));
  await runAfter(page, async () => { await page.fill(tid('batch-size'), '8'); await page.dispatchEvent(tid('batch-size'), 'change'); });
  return { page, errors };
}

test('the model menu lists one demo model per normalization kind', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  const page = await openPage(browser, base);
  const menu = await page.$$eval(`${tid('model-select')} option`, (os) => os.map((o) => o.textContent));
  for (const label of ['BatchNorm', 'GroupNorm', 'Batch Renorm', 'Ghost BatchNorm', 'frozen BatchNorm', 'no normalization'])
    assert.ok(menu.some((t) => t.includes(`Norm demo: ${label} `)), `${label} not in ${JSON.stringify(menu)}`);
  await page.close();
});

for (const kind of KINDS) {
  // (frozen and none used to stall here: the page started the 1/sqrt(B) sweep on load, which has nothing to measure
  // without batch statistics and left a sticky error; the sweep is now neither started nor run for them)
  const todo = undefined;
  test(`?model=norms/${kind}: the norm panel follows the kind`, { skip: SKIP, todo, timeout: 4 * WAIT }, async () => {
    const { page, errors } = await open(kind);
    const p = await panel(page);
    const info = await page.evaluate(() => window.__bnlab.model.info);
    assert.equal(p.kind, kind, p.text);
    assert.equal(info.trainData, 'procedural');
    assert.equal(await page.evaluate(() => window.__bnlab.last.B), 8);
    const dependent = ['batch', 'renorm', 'ghost'].includes(kind);
    assert.equal(p.batchDependent, String(dependent));
    if (!dependent) assert.equal(p.probeSame, 'true', `${kind}: eval and train top-5 differ: ${p.text}`);
    if (kind === 'batch') {
      assert.match(p.text, /depend on the other images of the batch/);
      assert.equal(p.probeSame, 'false', 'BatchNorm at B = 8: train-mode top-5 should differ from eval');
    }
    if (kind === 'frozen') assert.match(p.text, /running statistics are used in training too/);
    if (kind === 'none') assert.match(p.text, /No normalization/);
    if (kind === 'group') {
      assert.match(p.text, /same in train and eval mode, whatever the batch/);
      assert.ok(p.rows.length > 0);
      assert.ok(Number(p.maxTrainEvalDiff) <= 1e-5, `group stats train vs eval: ${p.maxTrainEvalDiff}`);
      for (const [, , trainMean, evalMean, v] of p.rows) {
        assert.equal(trainMean, evalMean);
        assert.ok(Number(v) >= 0);
      }
    }
    if (kind === 'renorm') {
      const { rmax, dmax } = info.renorm;
      assert.equal(p.rows.length, Number(p.channels));
      assert.ok(p.rows.length > 0);
      let notOne = 0;
      for (const [, r, d] of p.rows) {
        assert.ok(Number(r) >= 1 / rmax - 1e-3 && Number(r) <= rmax + 1e-3, `r ${r}`);
        assert.ok(Math.abs(Number(d)) <= dmax + 1e-3, `d ${d}`);
        if (Number(r) !== 1 || Number(d) !== 0) notOne++;
      }
      assert.ok(notOne > 0, 'every r is 1 and every d 0');
    }
    if (kind === 'ghost') {
      const V = Number(info.norm.split(':')[1]);
      assert.equal(Number(p.virtualBatches), 8 / V);
      assert.equal(p.rows.length, 8 / V);
      assert.notDeepEqual(p.rows[0].slice(1), p.rows[1].slice(1));
    }
    assert.deepEqual(errors, []);
    await page.close();
  });
}
