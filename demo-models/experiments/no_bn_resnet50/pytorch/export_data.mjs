// Writes the procedural images the PyTorch cross-check trains on (10 classes, 32x32, normalized NHWC float32):
//   node demo-models/experiments/no_bn_resnet50/pytorch/export_data.mjs OUTDIR
import { createBnLab } from '../../../../web/bnlab.mjs';
import fs from 'node:fs';
const OUT = process.argv[2] ?? '.';
const lab = await createBnLab();
for (const [name, seed, n] of [['train', 1, 10000], ['val', 2, 1000]]) {
  const d = lab.procedural({ seed, count: n, classes: 10, size: 32 });
  const b = d.batch(0, n, { augment: false });
  fs.writeFileSync(`${OUT}/${name}_x.f32`, Buffer.from(b.x.buffer, b.x.byteOffset, b.x.byteLength));
  fs.writeFileSync(`${OUT}/${name}_y.i32`, Buffer.from(b.labels.buffer, b.labels.byteOffset, b.labels.byteLength));
  d.dispose();
}
