// crops.mjs: where a batch of photo crops comes from, as numbers only (no canvas, no DOM), so Node
// tests it and the page's worker draws it.
//
// Training-style crops follow torchvision's RandomResizedCrop(size) (scale 0.08..1 of the area,
// aspect ratio 3/4..4/3 drawn log-uniformly, 10 tries, then a centre crop clamped to the ratio
// range) plus a horizontal flip with probability 1/2. The probe uses the evaluation recipe:
// resize the shorter side to size*256/224 and take the centre size x size (224 -> 256 -> 224).
// Every crop is a rectangle of the source photo { photo, x, y, w, h, flip }, scaled to size x size.
//
//   const plan = batchPlan(seed, B, photos);         // photos: [{ width, height }, ...]
//   const probe = centreCrop(photo.width, photo.height, 224);

export const RRC = Object.freeze({ scale: [0.08, 1], ratio: [3 / 4, 4 / 3], tries: 10 });

// A small seeded generator (mulberry32): uniform floats in [0, 1), the same sequence everywhere.
export function rng(seed) {
  return mulberry32((seed >>> 0) ^ 0x6d2b79f5);
}

// mulberry32 itself, its state started at `state` (stats_ci.mjs and tests seed it directly).
export function mulberry32(state) {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uniform = (r, lo, hi) => lo + (hi - lo) * r();
const randint = (r, lo, hi) => lo + Math.floor(r() * (hi - lo + 1));   // inclusive, as torch.randint(lo, hi + 1)

// torchvision.transforms.RandomResizedCrop.get_params for a W x H photo: { x, y, w, h, tries }
// (tries: 1..10 when a random draw fitted, 0 for the centre fallback).
export function randomResizedCrop(W, H, r, { scale = RRC.scale, ratio = RRC.ratio, tries = RRC.tries } = {}) {
  const area = W * H;
  const logr = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let t = 1; t <= tries; t++) {
    const target = area * uniform(r, scale[0], scale[1]);
    const aspect = Math.exp(uniform(r, logr[0], logr[1]));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= W && h <= H) return { x: randint(r, 0, W - w), y: randint(r, 0, H - h), w, h, tries: t };
  }
  // fallback: the whole photo, cut to the nearest allowed aspect ratio, centred
  const inRatio = W / H;
  let w = W, h = H;
  if (inRatio < ratio[0]) h = Math.round(W / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(H * ratio[1]);
  return { x: Math.floor((W - w) / 2), y: Math.floor((H - h) / 2), w, h, tries: 0 };
}

// The evaluation crop: shorter side resized to round(size * 256 / 224), centre size x size; as a
// rectangle of the source photo.
export function centreCrop(W, H, size) {
  const resized = Math.round((size * 256) / 224);
  const s = Math.min(W, H) / resized;   // source pixels per resized pixel
  const side = Math.min(size * s, W, H);
  return { x: (W - side) / 2, y: (H - side) / 2, w: side, h: side, flip: false };
}

// B crops drawn from (seed): photo k is picked uniformly (with replacement), then its crop and flip.
// Crop i depends only on (seed, i), so a larger batch of the same seed starts with the smaller one.
export function batchPlan(seed, B, photos) {
  if (!photos.length) throw new Error('bnlab: no photos to crop from');
  const out = [];
  for (let i = 0; i < B; i++) {
    const r = rng(Math.imul((seed >>> 0) + 1, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca77));
    const photo = Math.floor(r() * photos.length);
    const { width, height } = photos[photo];
    const c = randomResizedCrop(width, height, r);
    out.push({ photo, x: c.x, y: c.y, w: c.w, h: c.h, flip: r() < 0.5, tries: c.tries });
  }
  return out;
}

// RGBA bytes of `pixels` pixels (n images of H x W: pixels = n*H*W) into normalized NHWC floats:
// (v / 255 - mean[c]) / std[c]; alpha is ignored.
export function normalizeRGBA(rgba, pixels, mean, std, out = new Float32Array(pixels * 3)) {
  // one table per channel of the 256 values (v / 255 - mean) / std, computed as the formula is: the same floats
  const lut = new Float32Array(768);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v / 255 - mean[c]) / std[c];
  for (let p = 0, q = 0, o = 0; p < pixels; p++, q += 4, o += 3) {
    out[o] = lut[rgba[q]];
    out[o + 1] = lut[256 + rgba[q + 1]];
    out[o + 2] = lut[512 + rgba[q + 2]];
  }
  return out;
}
