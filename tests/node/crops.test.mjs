// web/crops.mjs: the page's photo batches. Seeded (same seed, same crops; a larger batch starts with
// the smaller one), every crop inside its photo and inside RandomResizedCrop's bounds (area 8-100 %,
// aspect 3/4..4/3 up to rounding), the centre fallback where nothing fits, flips about half the
// time, and the evaluation crop (resize to size*256/224, centre size x size).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchPlan, centreCrop, normalizeRGBA, randomResizedCrop, rng, RRC } from '../../web/crops.mjs';

const PHOTOS = [{ width: 512, height: 512 }, { width: 451, height: 300 }, { width: 340, height: 512 }, { width: 512, height: 341 }];

test('determinism by seed; crop i depends only on (seed, i)', () => {
  const a = batchPlan(7, 64, PHOTOS), b = batchPlan(7, 64, PHOTOS), c = batchPlan(8, 64, PHOTOS);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.deepEqual(batchPlan(7, 256, PHOTOS).slice(0, 64), a, 'a larger batch of the same seed starts with the smaller one');
  assert.ok(new Set(a.map((p) => p.photo)).size === PHOTOS.length, 'every photo is drawn in 64 crops');
  const r1 = rng(3), r2 = rng(3);
  for (let i = 0; i < 100; i++) { const v = r1(); assert.equal(v, r2()); assert.ok(v >= 0 && v < 1); }
});

test('every crop lies in its photo and within RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3)', () => {
  let random = 0;
  for (const seed of [0, 1, 2, 12345]) {
    for (const p of batchPlan(seed, 500, PHOTOS)) {
      const { width: W, height: H } = PHOTOS[p.photo];
      assert.ok(Number.isInteger(p.x) && Number.isInteger(p.y) && Number.isInteger(p.w) && Number.isInteger(p.h));
      assert.ok(p.x >= 0 && p.y >= 0 && p.w >= 1 && p.h >= 1 && p.x + p.w <= W && p.y + p.h <= H, JSON.stringify(p));
      if (p.tries === 0) continue;
      random++;
      // rounding w and h to integers moves area and ratio by at most about one pixel's worth
      const area = (p.w * p.h) / (W * H), ratio = p.w / p.h;
      const slack = (p.w + p.h + 1) / (W * H);
      assert.ok(area >= RRC.scale[0] - slack && area <= RRC.scale[1] + slack, `area ${area} ${JSON.stringify(p)}`);
      assert.ok(ratio >= (RRC.ratio[0] * (p.h - 0.5) - 0.5) / (p.h + 0.5) && ratio <= (RRC.ratio[1] * (p.h + 0.5) + 0.5) / (p.h - 0.5), `ratio ${ratio}`);
    }
  }
  assert.ok(random > 1900, `most crops are random draws (${random} of 2000)`);
  // areas spread over the whole range, not just a corner of it
  const areas = batchPlan(9, 2000, [{ width: 500, height: 500 }]).map((p) => (p.w * p.h) / 250000);
  assert.ok(Math.min(...areas) < 0.1 && Math.max(...areas) > 0.9, 'areas cover 0.08..1');
});

test('10 failed tries fall back to the centre crop clamped to the ratio range', () => {
  const r = rng(1);
  // 1000 x 50: any crop with ratio <= 4/3 is at most 67 x 50 < 8 % of the area, so nothing fits
  for (let i = 0; i < 20; i++) assert.deepEqual(randomResizedCrop(1000, 50, r), { x: 466, y: 0, w: 67, h: 50, tries: 0 });
  for (let i = 0; i < 20; i++) assert.deepEqual(randomResizedCrop(50, 1000, r), { x: 0, y: 466, w: 50, h: 67, tries: 0 });
  // a draw that cannot fit (scale above 1) on a photo inside the ratio range: the whole photo
  assert.deepEqual(randomResizedCrop(120, 100, r, { scale: [1.5, 2] }), { x: 0, y: 0, w: 120, h: 100, tries: 0 });
  // the tries are counted: exactly 10 draws of (scale, ratio) before the fallback
  let calls = 0;
  const counting = () => { calls++; return 0.999; };
  randomResizedCrop(1000, 50, counting);
  assert.equal(calls, 2 * RRC.tries);
});

test('horizontal flips: about half, from the same seeded stream', () => {
  const plan = batchPlan(5, 4000, PHOTOS);
  const flips = plan.filter((p) => p.flip).length;
  assert.ok(flips > 1850 && flips < 2150, `${flips} of 4000 flipped`);
  assert.deepEqual(plan.map((p) => p.flip), batchPlan(5, 4000, PHOTOS).map((p) => p.flip));
});

test('evaluation crop: shorter side to size*256/224, centre size x size', () => {
  assert.deepEqual(centreCrop(256, 256, 224), { x: 16, y: 16, w: 224, h: 224, flip: false });
  const c = centreCrop(640, 427, 224);   // the rocket photo: 427 -> 256, so 224 of 256 is 373.625 source pixels
  assert.ok(Math.abs(c.w - 373.625) < 1e-9 && c.w === c.h);
  assert.ok(Math.abs(c.x - (640 - 373.625) / 2) < 1e-9 && Math.abs(c.y - (427 - 373.625) / 2) < 1e-9);
  const s = centreCrop(300, 451, 64);     // other input sizes scale the same way: 64 -> 73 -> 64
  assert.ok(Math.abs(s.w - (64 * 300) / 73) < 1e-9);
});

test('normalizeRGBA: (v/255 - mean) / std per channel, alpha ignored', () => {
  const rgba = new Uint8Array([255, 0, 51, 7, 0, 255, 102, 200]);
  const x = normalizeRGBA(rgba, 1, [0.5, 0.5, 0.5], [0.25, 0.5, 1], new Float32Array(3));
  assert.deepEqual(Array.from(x), [2, -1, 0.2 - 0.5].map(Math.fround));
  const y = normalizeRGBA(rgba, 2, [0, 0, 0], [1, 1, 1]);
  assert.equal(y.length, 6);
  assert.ok(Math.abs(y[5] - 0.4) < 1e-6);
});
