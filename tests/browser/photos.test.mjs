// Browser tests of the page with models that are not the procedural demo model: a 1000-class ResNet
// without metadata (tests/fixtures/imagenet, made by tests/gen_fixture_imagenet.py) runs at its own
// 224x224 on photo crops, with ImageNet names in the top-5 and a model card that says what it
// assumed; a model's own metadata (size, names, training data) is followed; malformed metadata is
// shown as ignored; the procedural demo model still gets shapes.
//
//   node --test tests/browser/photos.test.mjs        (headless Debian chromium; skipped without it)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { IMAGENET_CLASSES } from '../../web/imagenet_classes.mjs';
import { parseSafetensors, writeSafetensors } from '../node/safetensors.mjs';
import { ARTIFACTS, ROOT, SKIP_NO_CHROMIUM as SKIP, WAIT, fillSweepAndSteps, launchBrowser, openPage, runAfter, shutDown, startServer, tid, waitReady } from './helpers.mjs';

const IN1K = path.join(ROOT, 'tests', 'fixtures', 'imagenet', 'resnet50-narrow-1000.safetensors');
const R50 = path.join(ROOT, 'tests', 'fixtures', 'resnet', 'resnet50.weights.safetensors');

let server, browser, page;
const consoleErrors = [];

before(async () => {
  if (SKIP) return;
  let url;
  ({ proc: server, url } = await startServer());
  browser = await launchBrowser();
  // these tests were written for the procedural model (the page's default is the Fashion-MNIST one when
  // demo-models/ has it: tests/browser/fashion.test.mjs); ?model= picks the first model to load
  page = await openPage(browser, `${url}?model=resnet50-procedural`, { errors: consoleErrors });
  await waitReady(page);
});

after(() => shutDown(browser, server));

const card = () => page.evaluate(() => ({ ...document.querySelector('[data-testid="model-card"]').dataset, text: document.querySelector('[data-testid="model-card"]').innerText }));
const top5 = () => page.evaluate(() => {
  const el = document.querySelector('[data-testid="top5"]');
  return { names: JSON.parse(el.dataset.names), p: JSON.parse(el.dataset.p), text: el.innerText };
});
const last = () => page.evaluate(() => window.__bnlab.last);

// Loads weights through the file input and waits for the first run on them.
async function loadWeights(name, buffer) {
  // loading is not offered while a long job runs (a small model sweeps 1/sqrt(B) by itself after loading)
  await page.waitForFunction(() => !document.getElementById('weights-file').disabled, null, { timeout: WAIT });
  await waitReady(page);
  await runAfter(page, () => page.setInputFiles(tid('weights-file'), { name, mimeType: 'application/octet-stream', buffer }));
}
async function runBatch(B) {
  const n = await page.evaluate(() => window.__bnlab.runs);
  await page.fill(tid('batch-size'), String(B));
  await page.dispatchEvent(tid('batch-size'), 'change');
  await page.waitForFunction(([k, b]) => window.__bnlab.runs > k && window.__bnlab.last.B === b, [n, B], { timeout: WAIT });
  await waitReady(page);
}
const thumbSizes = () => page.$$eval('#thumbs canvas', (cs) => cs.map((c) => `${c.width}x${c.height}:${c.title}`));

test('the procedural demo model gets procedural shapes at its own 64x64', { skip: SKIP, timeout: WAIT }, async () => {
  const c = await card();
  assert.equal(c.source, 'procedural');
  assert.equal(c.trainData, 'procedural');
  assert.equal(c.inputSize, '64x64');
  assert.deepEqual(JSON.parse(c.assumed), [], 'the demo model says everything itself');
  assert.match(c.text, /input\s+64×64 · from the file/);
  const th = await thumbSizes();
  assert.ok(th.length > 0 && th.every((t) => /^64x64:procedural image/.test(t)), th.join(', '));
  assert.match(await page.textContent('#probe-label'), /^procedural: /);
});

test('a 1000-class ResNet without metadata runs at 224x224 on photo crops, with ImageNet names and its assumptions on the card', { skip: SKIP, timeout: WAIT }, async () => {
  await loadWeights('resnet50-narrow-1000.safetensors', readFileSync(IN1K));
  const c = await card();
  assert.equal(c.inputSize, '224x224');
  assert.equal(c.classes, '1000');
  assert.equal(c.source, 'photos');
  assert.equal(c.trainData, 'imagenet');
  assert.deepEqual(JSON.parse(c.assumed).sort(), ['inputSize', 'labels', 'mean', 'std', 'trainData']);
  assert.match(c.text, /input\s+224×224 · assumed: .*1000 classes: an ImageNet model/);
  assert.match(c.text, /class names\s+the 1000 ImageNet class names · assumed/);
  assert.match(c.text, /threads\s+\d+ threads? \(simd(-threads)? build, relaxed-SIMD FMA\)/);   // Chromium runs relaxed SIMD
  assert.equal(c.kernel, 'gemm_4x8__wasmrelaxed');
  // the batch really ran at 224x224 on photos, the probe is the cat's centre crop
  const th = await thumbSizes();
  assert.ok(th.length > 1 && th.every((t) => t.startsWith('224x224:')), th.join(', '));
  assert.match(th[0], /probe photo/);
  assert.match(th[1], /random crop/);
  assert.equal(await page.textContent('#probe-label'), 'photo: chelsea.jpg');
  // the probe is the evaluation crop: chelsea (451x300) resized to 256 on the short side, centre 224
  const diff = await page.evaluate(async () => {
    const bm = await createImageBitmap(await (await fetch('photos/chelsea.jpg')).blob());
    const side = (300 * 224) / 256, c = new OffscreenCanvas(224, 224), ctx = c.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(bm, (451 - side) / 2, (300 - side) / 2, side, side, 0, 0, 224, 224);
    const want = ctx.getImageData(0, 0, 224, 224).data;
    const got = document.getElementById('probe-canvas').getContext('2d').getImageData(0, 0, 224, 224).data;
    let sum = 0;
    for (let i = 0; i < want.length; i++) sum += Math.abs(want[i] - got[i]);
    return sum / want.length;
  });
  assert.ok(diff < 2, `probe thumbnail differs from the 256/224 centre crop by ${diff} per byte`);
  const t = await top5();
  assert.equal(t.names.length, 5);
  for (const n of t.names) assert.ok(IMAGENET_CLASSES.includes(n), `${n} is an ImageNet class name`);
  assert.ok(t.p.every((p) => p > 0 && p < 1) && t.p[0] >= t.p[4]);
  assert.doesNotMatch(t.text, /class \d/);
  // "train here" is off (photos have no labels), with the reason on the page
  assert.equal(await page.isDisabled('#train-start'), true);
  assert.match(await page.textContent('#train-na'), /photos, which have none/);
  // a random crop as drawn: the recorded rectangle of its photo, mirrored when flipped (and not otherwise)
  const crops = await page.evaluate(() => window.__bnlab.crops);
  assert.equal(crops.length, th.length);
  const k = crops.findIndex((c, i) => i > 0 && c.flip);
  assert.ok(k > 0, `a flipped crop among the first ${crops.length}: ${JSON.stringify(crops)}`);
  const diffs = await page.evaluate(async (k) => {
    const c = window.__bnlab.crops[k];
    const bm = await createImageBitmap(await (await fetch(`photos/${c.photo}`)).blob());
    const got = document.querySelectorAll('#thumbs canvas')[k].getContext('2d').getImageData(0, 0, 224, 224).data;
    const out = [];
    for (const flip of [true, false]) {
      const cv = new OffscreenCanvas(224, 224), ctx = cv.getContext('2d');
      ctx.imageSmoothingQuality = 'high';
      if (flip) ctx.setTransform(-1, 0, 0, 1, 224, 0);
      ctx.drawImage(bm, c.x, c.y, c.w, c.h, 0, 0, 224, 224);
      const want = ctx.getImageData(0, 0, 224, 224).data;
      let sum = 0;
      for (let i = 0; i < want.length; i++) sum += Math.abs(want[i] - got[i]);
      out.push(sum / want.length);
    }
    return out;
  }, k);
  assert.ok(diffs[0] < 2 && diffs[1] > 3 * diffs[0] + 1, `flipped crop ${k}: ${diffs[0]} per byte from the mirrored rectangle, ${diffs[1]} from the unmirrored one`);
  // more crops than photos: 48 from 12
  await runBatch(48);
  assert.equal((await last()).B, 48);
  assert.ok((await page.$$eval('#thumbs canvas', (cs) => new Set(cs.map((c) => c.toDataURL())).size)) >= 11, 'the crops differ');
  await page.screenshot({ path: path.join(ARTIFACTS, 'photos-imagenet-1000.png'), fullPage: true });
});

test('a long batch shows its progress and can be cancelled; the page keeps its model and runs again', { skip: SKIP, timeout: WAIT }, async () => {
  const name = await page.textContent('#model-name');
  const runs = await page.evaluate(() => window.__bnlab.runs);
  await page.fill(tid('batch-size'), '256');
  await page.dispatchEvent(tid('batch-size'), 'change');
  await page.waitForFunction(() => /train-mode forward of 256 images at 224×224 · [\d.]+ s of ~[\d.]+ s/.test(document.querySelector('[data-testid="status"]').textContent), null, { timeout: WAIT });
  const seen = await page.evaluate(() => ({ cancel: !document.getElementById('cancel').hidden, bar: !document.getElementById('busy-bar').hidden,
    layer: !document.querySelector('[data-testid="layer"]').disabled }));
  assert.deepEqual(seen, { cancel: true, bar: true, layer: true }, 'cancel and progress bar shown; the controls still answer');
  // the busy dot blinks from the busy line's timer (no CSS animation repainting every frame)
  const blink = await page.evaluate(async () => {
    const el = document.querySelector('[data-testid="status"]'), dot = getComputedStyle(el, '::before');
    const r = { animation: dot.animationName, dot: dot.content, ticks: new Set() };
    for (let i = 0; i < 6 && el.dataset.state === 'busy'; i++, await new Promise((res) => setTimeout(res, 130))) r.ticks.add(el.dataset.tick);
    return { ...r, ticks: [...r.ticks].sort() };
  });
  assert.deepEqual(blink, { animation: 'none', dot: '""', ticks: ['0', '1'] }, 'the busy dot');
  const t0 = Date.now();
  await page.click('#cancel');
  await page.waitForFunction(() => /cancelled the batch/.test(document.querySelector('[data-testid="status"]').textContent), null, { timeout: WAIT });
  const waited = Date.now() - t0;
  assert.ok(waited < 15_000, `cancel took ${waited} ms`);
  assert.equal(await page.getAttribute(tid('status'), 'data-state'), 'ready');
  assert.equal(await page.isHidden('#cancel'), true);
  assert.equal(await page.evaluate(() => window.__bnlab.runs), runs, 'the cancelled batch was not drawn');
  assert.equal(await page.textContent('#model-name'), name, 'the same model, reloaded');
  assert.equal((await card()).inputSize, '224x224');
  await runBatch(8);
  assert.equal((await last()).B, 8);
});

test('a model\'s own metadata is followed: input size, names, data; malformed keys are shown as ignored', { skip: SKIP, timeout: WAIT }, async () => {
  const f = parseSafetensors(new Uint8Array(readFileSync(R50)));
  const names = ['ant', 'bee', 'cat', 'dog', 'eel', 'fox', 'gnu', 'hen', 'ibis', 'jay'];
  await loadWeights('r50-96.safetensors', Buffer.from(writeSafetensors(f.tensors, {
    input_size: '[3,96,96]', labels: JSON.stringify(names), 'train.data': 'cifar10', mean: '[0.5,0.5', std: '[0.25,0.25,0.25]',
  })));
  const c = await card();
  assert.equal(c.inputSize, '96x96');
  assert.deepEqual(JSON.parse(c.assumed), ['mean']);
  assert.equal(c.problems, '1');
  assert.match(c.text, /ignored\s+mean '\[0.5,0.5' is not a JSON array of 3 numbers/);
  assert.ok((await thumbSizes()).every((t) => t.startsWith('96x96:')));
  for (const n of (await top5()).names) assert.ok(names.includes(n), n);
  // data the page does not have (Fashion-MNIST is wired: tests/browser/fashion.test.mjs): photos, and the page says so
  assert.equal(c.source, 'photos');
  assert.match(await page.textContent('#source-note'), /trained on cifar10: not available in the page/);
  assert.equal(await page.isVisible('#source-note'), true);
  await page.screenshot({ path: path.join(ARTIFACTS, 'photos-own-metadata.png') });
});

test('back to the demo model: shapes again; no console errors all along', { skip: SKIP, timeout: WAIT }, async () => {
  await loadWeights('resnet50-procedural.safetensors', readFileSync(path.join(ROOT, 'demo-models', 'resnet50-procedural.safetensors')));
  assert.equal((await card()).source, 'procedural');
  assert.equal(await page.isHidden('#source-note'), true);
  assert.equal(await page.isDisabled('#train-start'), false);
  assert.ok((await thumbSizes()).every((t) => /^64x64:procedural image/.test(t)));
  assert.deepEqual(consoleErrors, []);
});

// Moves the pointer onto hover point k of a plot and returns the tooltip's text ('' when none shows).
async function hoverText(id, k = 0) {
  const at = await page.evaluate(([id, k]) => {
    const c = document.getElementById(id), svg = c.querySelector('svg'), pts = c._hover || [];
    if (!pts.length) return null;
    c.scrollIntoView({ block: 'center' });
    const r = svg.getBoundingClientRect(), s = r.width / svg.viewBox.baseVal.width, p = pts[Math.min(k, pts.length - 1)];
    return [r.left + p[0] * s, r.top + p[1] * s];
  }, [id, k]);
  if (!at) return '';
  await page.mouse.move(at[0] + 2, at[1] + 1);
  return page.evaluate(() => { const t = document.getElementById('plot-tip'); return t.hidden ? '' : t.textContent; });
}

test('every plot answers a hover with its values', { skip: SKIP, timeout: 4 * WAIT }, async () => {
  // fill every plot on the (fast) demo model: a batch, the 1/sqrt(B) sweep, 3 SGD steps, PreciseBN
  await runBatch(16);
  await fillSweepAndSteps(page);
  await page.fill('#precise-k', '2');
  await page.fill('#precise-b', '8');
  await page.click('#precise-run');
  await page.waitForFunction(() => window.__bnlab.precise, null, { timeout: WAIT });
  await waitReady(page);
  const want = {
    'plot-mean': /^(bn1|layer\S+) channel \d+: batch mean -?[\d.e-]+, running -?[\d.e-]+$/,
    'plot-var': /channel \d+: batch variance [\d.e-]+, running [\d.e-]+$/,
    'plot-overview': /^bn1: \|Δmean\|\/σ [\d.]+, \|ln var ratio\| [\d.]+$/,
    'plot-time': /^B = \d+: (train|eval) mode [\d.]+ ms per forward$/,
    'plot-spread': /^B = 1: std of the batch mean [\d.e-]+ σ \(c\/√B: [\d.e-]+\)$/,
    'plot-loss': /^step 1: loss [\d.]+$/,
    'plot-converge': /^step 1: \|Δmean\|\/σ [\d.]+$/,
    'plot-precise': /^bn1: \|Δmean\|\/σ before [\d.]+, after [\d.]+$/,
  };
  const got = {};
  for (const id of Object.keys(want)) got[id] = await hoverText(id);
  for (const [id, re] of Object.entries(want)) assert.match(got[id], re, `${id}: ${JSON.stringify(got[id])}`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'photos-hover.png') });
  // away from the points: no tooltip
  await page.mouse.move(2, 2);
  assert.equal(await page.isHidden('#plot-tip'), true);
});
