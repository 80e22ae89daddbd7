// Browser tests for "Show the normalization itself" (issue 17) on the default demo model (Fashion-MNIST
// when demo-models/ has it): the channel view (web/panel_channel.mjs) shows one channel's values before
// BatchNorm, normalized and after gamma/beta, train mode beside eval mode, with the formula's numbers;
// those numbers agree with the statistics panel's batch statistics (one C forward computes both).
//
//   node --test tests/browser/teach.test.mjs        (headless Debian chromium; skipped without it)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, ROOT, SKIP_NO_CHROMIUM as SKIP, WAIT, launchBrowser, openPage, shutDown, startServer } from './helpers.mjs';

const EPS = 1e-5;

let server, browser, page;
const consoleErrors = [];

before(async () => {
  if (SKIP) return;
  let url;
  ({ proc: server, url } = await startServer());
  browser = await launchBrowser();
  page = await openPage(browser, url, { errors: consoleErrors });
  await waitChannel(0);
});

after(() => shutDown(browser, server));

const waitChannel = (c, layer = null) => page.waitForFunction(([c, layer]) => {
  const d = document.getElementById('channel-panel').dataset;
  return d.channel === String(c) && (!layer || d.layer === layer) &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready';
}, [c, layer], { timeout: WAIT });
const channelData = () => page.evaluate(() => ({ ...document.getElementById('channel-panel').dataset }));
const close = (a, b, tol, what) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

// The statistics panel's batch mean of channel c: debug.lastBatchMean (the run's bnStats).
async function check(c) {
  const d = await channelData();
  const bm = await page.evaluate((c) => window.__bnlab.lastBatchMean[c], c);
  const B = Number(d.batchSize), n = Number(d.n);
  assert.equal(d.channel, String(c));
  assert.equal(n % B, 0, 'N*H*W values');
  assert.equal(Number(d.preCount), n, 'every value is in the histogram');
  // train mode: the batch's mean is the one the statistics panel shows for this channel
  close(Number(d.trainMean), bm, 1e-4, `channel ${c} batch mean`);
  // normalized with it: mean 0, std sqrt(var / (var + eps))
  const v = Number(d.trainVar);
  close(Number(d.normTrainMean), 0, 1e-5, 'train-mode normalized mean');
  close(Number(d.normTrainStd), Math.sqrt(v / (v + EPS)), 1e-5, 'train-mode normalized std');
  // eval mode: normalized with the running statistics
  const rm = Number(d.evalMean), rv = Number(d.evalVar);
  close(Number(d.normEvalMean), (Number(d.trainMean) - rm) / Math.sqrt(rv + EPS), 1e-5, 'eval-mode normalized mean');
  close(Number(d.normEvalStd), Math.sqrt(v / (rv + EPS)), 1e-5, 'eval-mode normalized std');
  // the formulas carry the live numbers
  const num = (x) => String(Number(x.toPrecision(4)));
  const sub = (m) => (m < 0 ? `x + ${num(-m)}` : `x − ${num(m)}`), add = (b) => (b < 0 ? `− ${num(-b)}` : `+ ${num(b)}`);
  const ft = await page.textContent('#ch-formula-train'), fe = await page.textContent('#ch-formula-eval');
  assert.ok(ft.includes(`${num(Number(d.gamma))}·(${sub(Number(d.trainMean))})/√(${num(v)} + `), ft);
  assert.ok(fe.includes(`(${sub(rm)})/√(${num(rv)} + `) && fe.endsWith(add(Number(d.beta))), fe);
  // six histograms, each with bars and a text label
  const plots = await page.$$eval('#channel-panel .plot', (els) => els.map((e) => ({
    bars: e.querySelectorAll('rect.bar, g rect').length, label: (e.querySelector('svg') || {}).getAttribute?.('aria-label') || '' })));
  assert.equal(plots.length, 6);
  for (const p of plots) { assert.ok(p.bars >= 10, JSON.stringify(p)); assert.match(p.label, /mean .*std/); }
}

test('the channel view shows channel 0 of the stem after the first run, numbers matching the statistics panel', { skip: SKIP, timeout: WAIT }, async () => {
  assert.equal((await channelData()).layer, 'bn1');
  await check(0);
  await page.locator('#channel-panel').screenshot({ path: path.join(ARTIFACTS, 'teach-channel.png') });
});

test('a typed channel and a clicked dot in the statistics plot pick the channel', { skip: SKIP, timeout: WAIT }, async () => {
  const C = Number(await page.getAttribute('#stats-panel', 'data-channels'));
  const c = Math.min(5, C - 1);
  await page.fill('#channel-pick', String(c));
  await page.click('#channel-show');
  await waitChannel(c);
  await check(c);
  // a dot: hover point k of the mean plot names its channel
  const at = await page.evaluate(() => {
    const cont = document.getElementById('plot-mean'), svg = cont.querySelector('svg'), pts = cont._hover;
    cont.scrollIntoView({ block: 'center' });
    const p = pts[pts.length - 1], r = svg.getBoundingClientRect(), s = r.width / svg.viewBox.baseVal.width;
    return { x: r.left + p[0] * s, y: r.top + p[1] * s, c: Number(/channel (\d+)/.exec(p[2])[1]) };
  });
  await page.mouse.click(at.x, at.y);
  await waitChannel(at.c);
  await check(at.c);
});

test('the view follows the layer', { skip: SKIP, timeout: WAIT }, async () => {
  const layers = await page.$$eval('#layer option', (os) => os.map((o) => o.value));
  const deep = layers[Math.min(5, layers.length - 1)];
  await page.fill('#channel-pick', '1');
  await page.selectOption('#layer', deep);
  await waitChannel(1, deep);
  await page.waitForFunction((l) => document.getElementById('stats-panel').dataset.layer === l, deep, { timeout: WAIT });
  await check(1);
  assert.deepEqual(consoleErrors, []);
});

test('a run draws its channel view from its own forward: the same numbers the channel command computes, no second job', { skip: SKIP, timeout: WAIT }, async () => {
  await page.fill('#channel-pick', '3');
  const runs = await page.evaluate(() => window.__bnlab.runs);
  await page.click('[data-testid="run"]');
  await page.waitForFunction((k) => window.__bnlab.runs > k && document.querySelector('[data-testid="status"]').dataset.state === 'ready',
    runs, { timeout: WAIT });
  const last = await page.evaluate(() => window.__bnlab.last);
  assert.equal(last.channelFromRun, true, 'the run carried the picked channel\'s view');
  await waitChannel(3, last.layer);
  const fromRun = await channelData();
  await check(3);
  // the worker's channel command (a forward up to the layer) gives the same numbers
  await page.evaluate(() => { document.getElementById('channel-panel').dataset.channel = ''; });
  await page.click('#channel-show');
  await waitChannel(3, last.layer);
  assert.deepEqual(await channelData(), fromRun);
});

test('accuracy against B: train mode below eval mode at small B, the page batch scored the same as the run', { skip: SKIP, timeout: 4 * WAIT }, async () => {
  assert.equal(await page.getAttribute('#acc-panel', 'data-available'), 'true');
  // the page's batch at B = 32 in eval mode: its accuracy is the sweep's first batch at B = 32
  await page.fill('#batch-size', '32');
  await page.selectOption('#mode', 'eval');
  await page.waitForFunction(() => window.__bnlab.last && window.__bnlab.last.mode === 'eval' && window.__bnlab.last.B === 32 &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  const accEval32 = await page.evaluate(() => window.__bnlab.last.accEval);
  await page.selectOption('#acc-k', '8');
  await page.click('#acc-run');
  await page.waitForFunction(() => JSON.parse(document.getElementById('acc-panel').dataset.points || '[]').length === 7 &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: 4 * WAIT });
  const pts = JSON.parse(await page.getAttribute('#acc-panel', 'data-points'));
  assert.deepEqual(pts.map((p) => p.B), [2, 4, 8, 16, 32, 64, 128]);
  for (const p of pts) { assert.equal(p.K, 8); assert.ok(p.train >= 0 && p.train <= 1 && p.eval >= 0 && p.eval <= 1); }
  // eval mode does not depend on B: every size scores roughly the model's accuracy
  const evals = pts.map((p) => p.eval);
  assert.ok(Math.min(...evals) > 0.6, `eval ${evals}`);
  // train mode at B = 2 normalizes with two images' statistics: far below eval; at B = 128 close to it
  // train mode at B = 2 normalizes with two images' statistics: below eval mode, and well below train mode at B = 128
  // (measured on the Fashion-MNIST model, 8 batches: B=2 train 62.5 %, eval 81.3 %; B=128 94.7 %, 94.5 %)
  assert.ok(pts[0].train < pts[0].eval, `B=2 train ${pts[0].train} eval ${pts[0].eval}`);
  assert.ok(pts[0].train < pts[6].train - 0.15, `train B=2 ${pts[0].train} B=128 ${pts[6].train}`);
  assert.ok(Math.abs(pts[6].train - pts[6].eval) < 0.15, `B=128 train ${pts[6].train} eval ${pts[6].eval}`);
  // hover and a text label on the chart
  const label = await page.getAttribute('#plot-acc svg', 'aria-label');
  assert.match(label, /train mode B=2 .*eval mode B=2 /);
  // the first batch at B = 32 is the page's batch: the same eval-mode accuracy as the run showed
  assert.ok(accEval32 != null);
  assert.equal(pts[4].each[0].eval, accEval32);
  await page.locator('#acc-panel').screenshot({ path: path.join(ARTIFACTS, 'teach-accuracy.png') });
});

test('with photo batches (a 1000-class model) the accuracy chart is hidden with its reason; the channel view still works', { skip: SKIP, timeout: 3 * WAIT }, async () => {
  const IN1K = path.join(ROOT, 'tests', 'fixtures', 'imagenet', 'resnet50-narrow-1000.safetensors');
  await page.waitForFunction(() => !document.getElementById('weights-file').disabled &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  const n = await page.evaluate(() => window.__bnlab.runs);
  await page.setInputFiles('[data-testid="weights-file"]', { name: 'resnet50-narrow-1000.safetensors', mimeType: 'application/octet-stream', buffer: readFileSync(IN1K) });
  await page.waitForFunction((k) => window.__bnlab.runs > k, n, { timeout: 2 * WAIT });
  assert.equal(await page.getAttribute('#acc-panel', 'data-available'), 'false');
  assert.equal(await page.isDisabled('#acc-run'), true);
  assert.equal(await page.isHidden('#acc-body'), true);
  assert.match(await page.textContent('#acc-na'), /photos, which have no labels/);
  assert.equal(await page.getAttribute('#acc-panel', 'data-points'), '[]');
  await page.fill('#channel-pick', '2');
  await page.click('#channel-show');
  await waitChannel(2);
  await check(2);
});

test('the guided path: four steps, one sentence each, next/back outline the control and panel; the jargon is explained in place', { skip: SKIP, timeout: WAIT }, async () => {
  const want = [['mode', 'stats-panel', /^1 \/ 4 · Mode/], ['batch-size', 'acc-panel', /^2 \/ 4 · Batch size/],
    ['update-running', 'probe-panel', /^3 \/ 4 · The forgotten \.eval\(\)/], ['precise-run', 'precise-panel', /^4 \/ 4 · PreciseBN/]];
  const state = () => page.evaluate(() => ({
    step: document.getElementById('guide').dataset.step, title: document.getElementById('guide-step').textContent,
    text: document.getElementById('guide-text').textContent,
    outlined: [...document.querySelectorAll('.guide-target')].map((e) => e.id).sort(),
    back: document.getElementById('guide-back').disabled, next: document.getElementById('guide-next').disabled,
  }));
  // back to the start (an earlier test may have moved it)
  for (let i = 0; i < 4; i++) if (!(await page.isDisabled('#guide-back'))) await page.click('#guide-back');
  for (let k = 0; k < 4; k++) {
    const s = await state();
    assert.equal(s.step, String(k));
    assert.match(s.title, want[k][2]);
    assert.deepEqual(s.outlined, [want[k][0], want[k][1]].sort());
    assert.equal((s.text.match(/[.!?](\s|$)/g) || []).length, 1, `one sentence: ${s.text}`);
    assert.equal(s.back, k === 0);
    assert.equal(s.next, k === 3);
    if (k < 3) await page.click('#guide-next');
  }
  assert.equal(await page.evaluate(() => { const r = document.getElementById('precise-panel').getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; }), true);
  await page.click('#guide-back');
  assert.equal((await state()).step, '2');
  // jargon where it appears: the statistics panel explains both measures in visible text
  const j = await page.textContent('#stats-jargon');
  assert.match(j, /\|Δmean\|\/σ.*running standard deviation/s);
  assert.match(j, /\|ln var ratio\|.*ln\(batch variance \/ running variance\)/s);
  assert.equal(await page.isVisible('#stats-jargon'), true);
  assert.match(await page.textContent('#overview-panel figcaption'), /\|Δmean\|\/σ.*\|ln var ratio\|/s);
});

test('390 px wide: no horizontal overflow, two-plot rows stacked, legends inside their plot and not overlapping', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
  try {
    await phone.goto(page.url().replace(/\?.*$/, ''));
    await phone.waitForFunction(() => window.__bnlab && window.__bnlab.ready && window.__bnlab.runs > 0 &&
      document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
    const r = await phone.evaluate(() => {
      const overflow = document.documentElement.scrollWidth - innerWidth;
      const rows = [...document.querySelectorAll('.pair')].filter((p) => p.offsetParent).map((p) => {
        const kids = [...p.children].filter((c) => c.offsetParent).map((c) => c.getBoundingClientRect());
        return { id: p.closest('section').id, stacked: kids.every((b, i) => i === 0 || b.top >= kids[i - 1].bottom - 1) };
      });
      const legends = [];
      for (const svg of document.querySelectorAll('.plot svg')) {
        const sb = svg.getBoundingClientRect();
        const items = [...svg.querySelectorAll('text.legend')].map((t) => t.getBoundingClientRect());
        const inside = items.every((b) => b.left >= sb.left - 1 && b.right <= sb.right + 1);
        let overlap = false;
        for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
          const a = items[i], b = items[j];
          if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) overlap = true;
        }
        legends.push({ id: svg.parentElement.id, inside, overlap });
      }
      return { overflow, rows, legends };
    });
    await phone.screenshot({ path: path.join(ARTIFACTS, 'teach-390px.png'), fullPage: true });
    assert.ok(r.overflow <= 0, `horizontal overflow ${r.overflow} px`);
    assert.ok(r.rows.length >= 2, JSON.stringify(r.rows));
    for (const row of r.rows) assert.ok(row.stacked, `${row.id}: its two plots are side by side`);
    for (const l of r.legends) { assert.ok(l.inside, `${l.id}: legend outside the plot`); assert.ok(!l.overlap, `${l.id}: legend items overlap`); }
  } finally {
    await phone.close();
  }
});

// A key press that should open a file chooser, and the chooser. Playwright turns on Chromium's file-chooser
// interception when a 'filechooser' listener is added, but asynchronously; a key press sent in the same
// Promise.all can reach the page first, and then Chromium opens a real (headless, never answered) chooser
// that Playwright does not report: the cause of this test's failure after the norm-panel merge (the page did
// its part: the focused label got the keydown, the input was enabled, input.click() ran with user activation).
// One round trip to the page after adding the listener makes sure the interception is on before the key.
async function chooserFrom(key) {
  const chooser = page.waitForEvent('filechooser', { timeout: 10_000 });
  chooser.catch(() => {});
  await page.evaluate(() => 0);
  await page.keyboard.press(key);
  return chooser;
}

test('keyboard only: Tab reaches the main controls and the file buttons, Enter opens a file chooser and picks an overview bar; every chart has a text label', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  await page.goto(page.url().replace(/\?.*$/, ''));
  await page.waitForFunction(() => window.__bnlab && window.__bnlab.ready && window.__bnlab.runs > 0 &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
  // the walk and the file choosers run with the page's CPU slowed 8x (as on a loaded machine, where the race
  // above showed: without chooserFrom's round trip 2 of 5 walks got no chooser here)
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 8 });
  const seen = [];
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const e = document.activeElement;
      if (!e) return '';
      const f = e.querySelector && e.querySelector('input[type="file"]');
      return f ? `file:${f.id}` : e.id || (e.tagName === 'rect' ? 'bar' : e.tagName.toLowerCase());
    }));
  }
  for (const want of ['model-select', 'file:weights-file', 'mode', 'batch-size', 'run', 'file:image-files', 'guide-next', 'channel-pick', 'acc-run', 'bar'])
    assert.ok(seen.includes(want), `Tab never reaches ${want}: ${seen.join(' ')}`);
  // Enter on the focused "load weights…" button opens the file chooser (once no long job runs)
  await page.waitForFunction(() => !document.getElementById('weights-file').disabled &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  await page.focus('label.file-button:has(#weights-file)');
  const chooser = await chooserFrom('Enter');
  assert.equal(await chooser.element().evaluate((e) => e.id), 'weights-file');
  await page.focus('label.file-button:has(#image-files)');
  const c2 = await chooserFrom(' ');
  assert.equal(await c2.element().evaluate((e) => e.id), 'image-files');
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 1 });
  await cdp.detach();
  // an overview bar, focused and activated with Enter, picks its layer
  const layers = await page.$$eval('#layer option', (os) => os.map((o) => o.value));
  await page.focus('#plot-overview rect[role="button"]:nth-of-type(3)');
  const label = await page.evaluate(() => document.activeElement.getAttribute('aria-label'));
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('stats-panel').dataset.layer !== 'bn1' &&
    document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout: WAIT });
  const picked = await page.inputValue('#layer');
  assert.notEqual(picked, 'bn1');
  assert.ok(layers.includes(picked));
  assert.ok(label && label.includes(picked), `bar label ${label} names ${picked}`);
  // charts: role=img with a non-empty text summary
  const labels = await page.$$eval('.plot svg', (ss) => ss.map((s) => [s.parentElement.id, s.getAttribute('role'), s.getAttribute('aria-label') || '']));
  assert.ok(labels.length >= 10);
  for (const [id, role, l] of labels) { assert.equal(role, 'img', id); assert.ok(l.length > 10, `${id}: aria-label "${l}"`); }
  await page.screenshot({ path: path.join(ARTIFACTS, 'teach-keyboard.png') });
});
