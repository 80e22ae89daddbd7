// The PreciseBN node tests' shared fixture (tests/node/precise.test.mjs, precise_layer.test.mjs): the
// procedural demo ResNet-50 and three batches of 3, 5 and 4 images at 32x32 with their means shifted apart.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const WEIGHTS = new Uint8Array(readFileSync(`${ROOT}demo-models/resnet50-procedural.safetensors`));
export const H = 32, W = 32, SIZES = [3, 5, 4];
export const batches = SIZES.map((n, b) => ({
  x: new Float32Array(n * H * W * 3).map((_, i) => Math.sin(i * 0.37 + b) * 1.3 + 0.6 * b),
  shape: [n, H, W, 3],
}));
