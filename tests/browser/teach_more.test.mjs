// Browser tests for issue 17's later points on the default demo model (Fashion-MNIST when demo-models/ has it):
// how the batch couples images (web/panel_coupling.mjs), PreciseBN's held-out accuracy with intervals
// (web/panel_precise_acc.mjs), and the phone layout (390 x 844: results right after the controls, class names
// wrap, nothing wider than the screen).
//
//   node --test tests/browser/teach_more.test.mjs     (headless Debian chromium; skipped without it)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ARTIFACTS, SKIP_NO_CHROMIUM as SKIP, WAIT, launchBrowser, openPage, shutDown, startServer } from './helpers.mjs';

let server, browser, page, url;
const consoleErrors = [];

before(async () => {
  if (SKIP) return;
  ({ proc: server, url } = await startServer());
  browser = await launchBrowser();
  page = await openPage(browser, url, { errors: consoleErrors });
  await waitReady(page);
});

after(() => shutDown(browser, server));

// loaded, a run drawn, no job running, and loading offered again
const waitReady = (p) => p.waitForFunction(() => window.__bnlab && window.__bnlab.ready && window.__bnlab.runs > 0 &&
  document.querySelector('[data-testid="status"]').dataset.state === 'ready' && !document.getElementById('weights-file').disabled,
null, { timeout: WAIT });

test('swap the others: the kept image\'s train-mode logits move, its eval-mode logits are bit for bit the same', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  await page.fill('#batch-size', '8');
  await page.press('#batch-size', 'Enter');
  await page.waitForFunction(() => window.__bnlab.last && window.__bnlab.last.B === 8 &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  await page.fill('#couple-image', '3');
  await page.dispatchEvent('#couple-image', 'change');
  const swaps = (n) => page.waitForFunction((n) => document.getElementById('coupling-panel').dataset.swaps === String(n) &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', n, { timeout: WAIT });
  await page.click('#couple-swap');
  await swaps(1);
  await page.click('#couple-swap');
  await swaps(2);
  const h = JSON.parse(await page.getAttribute('#coupling-panel', 'data-history'));
  assert.deepEqual(h.map((e) => e.swap), [0, 1, 2]);
  for (let k = 1; k < h.length; k++) {
    // the kept image is the same input, the others are not
    assert.equal(h[k].inputSum, h[0].inputSum, `swap ${k}: the kept image's input changed`);
    assert.notEqual(h[k].batchSum, h[0].batchSum, `swap ${k}: the other images did not change`);
    // train mode: at least one logit moved; eval mode: every logit has the same bits
    assert.ok(h[k].train.some((v, i) => v !== h[0].train[i]), `swap ${k}: train-mode logits did not move`);
    assert.deepEqual(h[k].eval, h[0].eval, `swap ${k}: eval-mode logits moved`);
    // the kept image's stem channel after normalizing: the same story one layer in
    assert.ok(h[k].stemTrain.some((v, i) => v !== h[0].stemTrain[i]), `swap ${k}: train-mode normalized stem values did not move`);
    assert.deepEqual(h[k].stemEval, h[0].stemEval, `swap ${k}: eval-mode normalized stem values moved`);
  }
  const maxMove = Math.max(...h.slice(1).flatMap((e) => e.train.map((v, i) => Math.abs(v - h[0].train[i]))));
  assert.ok(maxMove > 1e-3, `train-mode logits moved by ${maxMove} only`);
  assert.equal(await page.getAttribute('#coupling-panel', 'data-eval-same-bits'), 'true');
  assert.match(await page.textContent('#couple-readout'), /eval mode's did not move: the same bits every time/);
  assert.match(await page.textContent('#couple-stem-text'), /At the stem \(bn1\), channel \d+ .* values after normalizing/);
  assert.equal(h[0].stemTrain.length, h[0].stemEval.length);
  assert.ok(h[0].stemTrain.length >= 16);
  assert.match(await page.getAttribute('#plot-couple svg', 'aria-label'), /train mode .*eval mode /);
  await page.locator('#coupling-panel').screenshot({ path: path.join(ARTIFACTS, 'teach-coupling.png') });
  // another batch: the panel is dimmed until swapped again, which starts from the new batch
  assert.equal(await page.getAttribute('#coupling-panel', 'data-stale'), 'false');
  await page.click('#new-batch');
  await page.waitForFunction(() => document.getElementById('coupling-panel').dataset.stale === 'true', null, { timeout: WAIT });
  await page.click('#couple-swap');
  await swaps(1);
  assert.equal(await page.getAttribute('#coupling-panel', 'data-stale'), 'false');
  const h2 = JSON.parse(await page.getAttribute('#coupling-panel', 'data-history'));
  assert.notEqual(h2[0].inputSum, h[0].inputSum, 'the new batch keeps another image 3');
  assert.deepEqual(consoleErrors, []);
});

test('PreciseBN: held-out accuracy before and after on >= 1000 images, each with a 95 % interval that contains it, and when recomputing helps', { skip: SKIP, timeout: 3 * WAIT }, async () => {
  await waitReady(page);
  // the default is 2,000, or 1,000 where one image took over 5 ms when the model loaded (a loaded machine can
  // measure that): this test asks for 2,000, the whole held-out part
  assert.ok(['1000', '2000'].includes(await page.inputValue('#precise-n')));
  await page.selectOption('#precise-n', '2000');
  await page.click('#precise-run');
  await page.waitForFunction(() => document.getElementById('precise-panel').dataset.accN &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: 3 * WAIT });
  const d = await page.evaluate(() => ({ ...document.getElementById('precise-panel').dataset }));
  const v = (k) => Number(d[k]);
  // Fashion-MNIST: the whole held-out part (2,000 images), never used for batches or statistics
  assert.ok(v('accN') >= 1000, `only ${d.accN} held-out images`);
  for (const w of ['Before', 'After']) {
    assert.ok(v(`acc${w}Lo`) <= v(`acc${w}`) && v(`acc${w}`) <= v(`acc${w}Hi`), `${w}: ${d[`acc${w}Lo`]} ${d[`acc${w}`]} ${d[`acc${w}Hi`]}`);
    // a Wilson interval at n = 2000 and p near 0.9 is about 2.5 points wide: neither a point nor everything
    const width = v(`acc${w}Hi`) - v(`acc${w}Lo`);
    assert.ok(width > 0.005 && width < 0.1, `${w} interval width ${width}`);
  }
  assert.ok(v('accDiffLo') <= v('accDiff') && v('accDiff') <= v('accDiffHi'), `change ${d.accDiffLo} ${d.accDiff} ${d.accDiffHi}`);
  assert.ok(Math.abs(v('accDiff') - (v('accAfter') - v('accBefore'))) < 1e-12, 'the change is after - before');
  // the page says so in words, with the number of images and the intervals
  const text = await page.textContent('#precise-acc');
  assert.match(text, new RegExp(`on ${Number(d.accN).toLocaleString('en')} held-out Fashion-MNIST test images`));
  assert.match(text, /\[\d+\.\d %, \d+\.\d %\] → \d+\.\d % \[\d+\.\d %, \d+\.\d %\]; change [+−±]\d+\.\d points \[[+−±]\d+\.\d, [+−±]\d+\.\d\]/);
  assert.match(await page.textContent('#precise-when'), /after\s+"train here".*resolution.*drawn the way training\s+drew them.*already\s+match its data/s);
  assert.equal(await page.isVisible('#precise-when'), true);
  await page.locator('#precise-panel').screenshot({ path: path.join(ARTIFACTS, 'teach-precise.png') });
  console.log(`PreciseBN on the default model: ${text}`);
});

test('390 x 844: the results start right below the controls and on the first screen, nothing is wider than the screen, class names wrap instead of being cut', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
  try {
    await phone.goto(url);
    await waitReady(phone);
    // the coupling panel's class names too
    await phone.click('#couple-swap');
    await phone.waitForFunction(() => document.getElementById('coupling-panel').dataset.swaps === '1' &&
      document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
    const r = await phone.evaluate(() => {
      const controls = document.getElementById('batch-section').getBoundingClientRect();
      const first = document.getElementById('stats-panel').getBoundingClientRect();
      // every visible element, HTML or SVG, inside the screen's width
      const wide = [];
      for (const e of document.querySelectorAll('body *')) {
        if (e.closest('[hidden]') || getComputedStyle(e).display === 'none') continue;
        const b = e.getBoundingClientRect();
        if (b.width > 0 && (b.right > innerWidth + 0.5 || b.left < -0.5)) wide.push(`${e.tagName} ${e.id || e.getAttribute('class') || ''} ${b.left.toFixed(0)}..${b.right.toFixed(0)}`);
      }
      const names = [...document.querySelectorAll('.top5 .name')].map((e) => ({ text: e.textContent, sw: e.scrollWidth, cw: e.clientWidth }));
      return { controlsBottom: controls.bottom, firstTop: first.top, gap: first.top - controls.bottom, scrollW: document.documentElement.scrollWidth,
        wide, names, link: document.querySelector('#batch-section .phone-only a').getAttribute('href'),
        linkVisible: !!document.querySelector('#batch-section .phone-only').offsetParent };
    });
    await phone.evaluate(() => window.scrollTo(0, 0));
    await phone.screenshot({ path: path.join(ARTIFACTS, 'teach-390-first-screen.png') });
    await phone.screenshot({ path: path.join(ARTIFACTS, 'teach-390-full.png'), fullPage: true });
    // the flex gap between the Batch card and the statistics panel is 8 px: 16 allows for rounding and a border
    assert.ok(r.gap >= 0 && r.gap <= 16, `the first result starts ${r.gap} px below the controls`);
    assert.ok(r.firstTop < 844 - 100, `the first result starts at ${r.firstTop} px: not on the first screen`);
    assert.ok(r.scrollW <= 390, `the page is ${r.scrollW} px wide`);
    assert.deepEqual(r.wide, [], 'elements wider than the screen');
    assert.ok(r.names.length >= 20, `${r.names.length} class-name cells (probe and coupling panels)`);
    for (const n of r.names) assert.ok(n.sw <= n.cw, `"${n.text}" is cut: ${n.sw} > ${n.cw}`);
    // the model and image controls moved below the results: a link in the Batch card leads there
    assert.equal(r.link, '#model-section');
    assert.equal(r.linkVisible, true);
  } finally {
    await phone.close();
  }
});
