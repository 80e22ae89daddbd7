// Browser tests of issue 12's "only the work a view needs" and "every plot answers a hover", on the
// procedural demo model (web/serve.mjs, Debian's chromium through playwright-core):
// - a change of the layer alone runs the forward only up to that layer (the worker's layerStats:
//   model.forwardTo; the stop layer it reports) and shows bitwise the statistics a full run shows;
// - PreciseBN of "only the layer shown" stops its forwards at that layer, changes that layer alone,
//   and gives bitwise the running statistics the whole-network PreciseBN gives it;
// - every drawn plot answers a hover over a point with a tooltip naming its values;
// - a batch of 256 shows its progress (phase line and bar) while it runs.
//
//   node --test tests/browser/page_views.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SKIP_NO_CHROMIUM as SKIP, WAIT, fillSweepAndSteps, launchBrowser, openPage, runAfter, shutDown, startServer, tid, waitReady } from './helpers.mjs';

let server, browser, page;

const last = () => page.evaluate(() => ({ ...window.__bnlab.last, overview: window.__bnlab.last.overview, stats: window.__bnlab.lastStats }));
// Does `action` and waits for the run (or layer view) it causes to be drawn and the page to be ready.
async function runView(action) {
  await runAfter(page, action);
  return last();
}
// A new batch size typed in: the field's change event on leaving it (as a user's Tab would fire it)
async function typeBatch(B) {
  await page.fill(tid('batch-size'), String(B));
  return runView(() => page.$eval(tid('batch-size'), (e) => e.blur()));
}
const same = (a, b) => a.length === b.length && a.every((v, k) => Object.is(v, b[k]));

before(async () => {
  if (SKIP) return;
  let url;
  ({ proc: server, url } = await startServer());
  browser = await launchBrowser();
  page = await openPage(browser, `${url}?model=resnet50-procedural`);
  await waitReady(page);
});
after(() => shutDown(browser, server));

test('a change of the layer alone runs the forward only up to it, with bitwise the statistics of a full run', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  await page.selectOption(tid('mode'), 'train');
  await typeBatch(16);
  const layers = await page.$$eval(`${tid('layer')} option`, (os) => os.map((o) => o.value));
  const target = 'layer1.0.bn2', ti = layers.indexOf(target);
  assert.ok(ti > 0 && ti < layers.length / 4, `${target} is an early layer (${ti} of ${layers.length})`);
  const view = await runView(() => page.selectOption(tid('layer'), target));
  assert.equal(view.view, 'layer', 'the layer change is answered by a layer view, not a whole run');
  assert.equal(view.layer, target);
  assert.equal(view.ranTo, ti, 'the forward stopped at the layer shown');
  assert.equal(view.layers, layers.length);
  assert.equal(await page.getAttribute('#stats-panel', 'data-layer'), target);
  assert.equal(await page.getAttribute('#stats-panel', 'data-stale'), 'false');
  // the same batch, a whole run (the run button): the same statistics, bit for bit
  const full = await runView(() => page.click(tid('run')));
  assert.equal(full.view, 'run');
  assert.equal(full.ranTo, layers.length - 1);
  assert.equal(full.layer, target);
  for (const k of ['batchMean', 'batchVar', 'runningMean', 'runningVar'])
    assert.ok(same(view.stats[k], full.stats[k]), `${k}: the layer view's differ from the full run's (${view.stats[k][0]} vs ${full.stats[k][0]})`);
  assert.equal(view.layerDist.dMean, full.layerDist.dMean);
  // another batch size is not the same batch: a whole run
  const other = await typeBatch(8);
  assert.equal(other.view, 'run');
  // a click on an overview bar picks its layer with a layer view too
  const picked = await runView(() => page.click('#plot-overview rect[role="button"]:nth-of-type(2)'));
  assert.equal(picked.view, 'layer');
  assert.equal(picked.ranTo, layers.indexOf(picked.layer));
});

test('PreciseBN of only the layer shown: forwards stop there, that layer alone changes, bitwise the whole-network PreciseBN\'s value', { skip: SKIP, timeout: 3 * WAIT }, async () => {
  const target = 'layer1.0.bn1';
  await runView(() => page.selectOption(tid('layer'), target));
  const layers = await page.$$eval(`${tid('layer')} option`, (os) => os.map((o) => o.value));
  const ti = layers.indexOf(target);
  const before = await runView(() => page.click(tid('run')));
  await page.fill('#precise-k', '3');
  await page.fill('#precise-b', '8');
  await page.check('#precise-layer');
  const one = await runView(() => page.click('#precise-run'));
  const p1 = await page.evaluate(() => window.__bnlab.precise);
  assert.equal(p1.layer, target);
  assert.equal(p1.ranTo, ti, 'the PreciseBN forwards stopped at the layer shown');
  assert.match(await page.textContent('#precise-readout'), new RegExp(`${target.replace(/\./g, '\\.')} \\(its forwards stopped there: ${ti + 1} of ${layers.length} layers ran\\)`));
  assert.equal(one.layer, target);
  assert.ok(!same(one.stats.runningMean, before.stats.runningMean), 'the layer\'s running mean changed');
  // every other layer's distance is unchanged: its running statistics did not move (same batch)
  one.overview.forEach((o, i) => {
    if (i !== ti) assert.equal(o.dMean, before.overview[i].dMean, `${o.name} changed`);
  });
  // the whole-network PreciseBN (C) from the file's state, same K, B and seed
  await runView(() => page.click('#reset-model'));
  await page.uncheck('#precise-layer');
  const all = await runView(() => page.click('#precise-run'));
  const p2 = await page.evaluate(() => window.__bnlab.precise);
  assert.equal(p2.layer, null);
  assert.equal(p2.ranTo, layers.length - 1);
  assert.equal(all.layer, target);
  assert.ok(same(one.stats.runningMean, all.stats.runningMean), `running mean: one layer ${one.stats.runningMean[0]}, whole network ${all.stats.runningMean[0]}`);
  assert.ok(same(one.stats.runningVar, all.stats.runningVar), `running var: one layer ${one.stats.runningVar[0]}, whole network ${all.stats.runningVar[0]}`);
  await runView(() => page.click('#reset-model'));
});

test('every drawn plot answers a hover over a point with its values', { skip: SKIP, timeout: 4 * WAIT }, async () => {
  // fill the plots that need a job: the spread, train here, PreciseBN, accuracy against B, the channel view
  await fillSweepAndSteps(page);
  await page.fill('#precise-k', '2');
  await runView(() => page.click('#precise-run'));
  await page.selectOption('#acc-k', '2');
  await page.click('#acc-run');
  await page.waitForFunction(() => JSON.parse(document.getElementById('acc-panel').dataset.points || '[]').length === 7, null, { timeout: 2 * WAIT });
  await waitReady(page);
  await page.waitForFunction(() => document.getElementById('channel-panel').dataset.n, null, { timeout: WAIT });
  const expect = {
    'plot-mean': /^layer1\.0\.bn1 channel \d+: batch mean -?[\d.e-]+, running -?[\d.e-]+$/,
    'plot-var': /^layer1\.0\.bn1 channel \d+: batch variance [\d.e-]+, running [\d.e-]+$/,
    'plot-overview': /^(bn1|layer\d\.\d+\.(bn\d|downsample\.1)): \|Δmean\|\/σ [\d.]+, \|ln var ratio\| [\d.]+$/,
    'plot-time': /^B = \d+: (train|eval) mode [\d.]+ ms per forward$/,
    'plot-spread': /^B = \d+: (std of the batch mean|mean \|batch mean − running mean\|)/,
    'plot-loss': /^step \d+: loss [\d.]+$/,
    'plot-converge': /^step \d+: \|Δmean\|\/σ [\d.]+$/,
    'plot-precise': /^(bn1|layer\d\.\d+\.(bn\d|downsample\.1)): \|Δmean\|\/σ (before|after) [\d.]+, (after|before) [\d.]+$/,
    'plot-acc': /^B = \d+: (train|eval) mode [\d.]+ %/,
    'ch-pre-train': /^layer1\.0\.bn1 channel \d+, values before BatchNorm: \d+ of \d+ values in \[/,
    'ch-norm-eval': /^layer1\.0\.bn1 channel \d+, eval mode, normalized with the running statistics: \d+ of \d+ values in \[/,
  };
  // every plot on the page with a chart drawn (not an empty placeholder) is checked, named above or not
  const ids = await page.$$eval('.plot', (ps) => ps.filter((p) => p.querySelector('svg') && !p.querySelector('svg text.empty')).map((p) => p.id));
  for (const id of Object.keys(expect)) assert.ok(ids.includes(id), `${id} has a chart drawn`);
  const got = {};
  for (const id of ids) {
    await page.locator(`#${id}`).scrollIntoViewIfNeeded();
    // the middle hover point of the plot, in page coordinates
    const at = await page.$eval(`#${id}`, (c) => {
      const pts = c._hover || [], svg = c.querySelector('svg');
      if (!pts.length) return null;
      const p = pts[Math.floor(pts.length / 2)], r = svg.getBoundingClientRect(), k = r.width / svg.viewBox.baseVal.width;
      return { x: r.left + p[0] * k, y: r.top + p[1] * k, texts: pts.map((q) => q[2]) };
    });
    assert.ok(at, `${id}: a chart without hover points`);
    await page.mouse.move(at.x + 1, at.y + 1);
    await page.waitForFunction((plot) => { const t = document.getElementById('plot-tip'); return !t.hidden && t.dataset.plot === plot; }, id, { timeout: 5000 });
    got[id] = await page.textContent('#plot-tip');
    assert.ok(at.texts.includes(got[id]), `${id}: the tooltip "${got[id]}" is one of the plot's points`);
    if (expect[id]) assert.match(got[id], expect[id], id);
    await page.mouse.move(0, 0);
  }
  assert.ok(ids.length >= 15, `plots checked: ${ids.join(', ')}`);
});

test('a batch of 256 shows its progress while it runs', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  await page.evaluate(() => {
    const seen = (window.__progressSeen = { texts: [], bar: false });
    new MutationObserver(() => {
      seen.texts.push(document.querySelector('[data-testid="status"]').textContent);
      if (!document.getElementById('busy-bar').hidden) seen.bar = true;
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  const r = await typeBatch(256);
  assert.equal(r.B, 256);
  const seen = await page.evaluate(() => window.__progressSeen);
  assert.ok(seen.bar, 'the progress bar showed');
  assert.ok(seen.texts.some((t) => /^busy: train-mode forward of 256 images at \d+×\d+ · [\d.]+ s of ~[\d.]+ s$/.test(t)),
    `the phase with its time and estimate: ${[...new Set(seen.texts)].slice(0, 8).join(' | ')}`);
});

test('"stop" pressed while the sweep still waits behind another job stops it', { skip: SKIP, timeout: 2 * WAIT }, async () => {
  await runView(() => page.selectOption(tid('layer'), 'bn1'));
  const before = await page.evaluate(() => {
    const seen = (window.__statusSeen = []);
    new MutationObserver(() => seen.push(document.querySelector('[data-testid="status"]').textContent))
      .observe(document.querySelector('[data-testid="status"]'), { subtree: true, childList: true, characterData: true });
    return window.__bnlab.spread && window.__bnlab.spread.layer;
  });
  // a batch of 256 (about a second here) runs first; the sweep is queued behind it and stopped there
  await page.fill(tid('batch-size'), '256');
  await page.$eval(tid('batch-size'), (e) => e.blur());
  await page.waitForFunction(() => document.querySelector('[data-testid="status"]').dataset.state === 'busy', null, { timeout: WAIT });
  await page.click('#spread-run');
  assert.equal(await page.textContent('#spread-run'), 'stop');
  await page.click('#spread-run');
  await page.waitForFunction(() => document.getElementById('spread-run').textContent === 'measure' &&
    document.querySelector('[data-testid="status"]').dataset.state !== 'busy', null, { timeout: WAIT });
  await waitReady(page);
  const seen = await page.evaluate(() => window.__statusSeen);
  assert.ok(seen.includes('ready · measurement stopped'), `the sweep was stopped: ${[...new Set(seen)].join(' | ')}`);
  assert.equal(await page.evaluate(() => window.__bnlab.spread && window.__bnlab.spread.layer), before, 'no finished sweep replaced the last one');
});
