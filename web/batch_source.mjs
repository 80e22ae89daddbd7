// batch_source.mjs: which images the page feeds a model, from its model card (model.info).
//
// The batch statistics BatchNorm compares with the running ones only mean something on the kind of
// data the running statistics were gathered on, so the source follows the file's train.data:
//   'procedural'       -> the procedural shapes (the same generator as `bnlab train --data procedural`)
//   'fashion-mnist...' -> Fashion-MNIST's test split (the worker fetches the IDX files the server names in
//                         models.json; square input sizes only; when the files cannot be fetched the worker
//                         falls back to photos and says why beside the model)
//   anything else      -> photos (ImageNet, assumed for 1000-class files, and unknown data): natural images
// The procedural generator draws square images only; a non-square procedural model gets photos.

export function batchSourceFor(info) {
  const data = info.trainData || null;
  const [, H, W] = info.inputSize;
  if (data === 'procedural') {
    if (H === W) return { kind: 'procedural', data, note: null };
    return { kind: 'photos', data, note: `trained on procedural shapes, but at ${H}×${W}: the shape generator draws squares, so photos are used` };
  }
  if (data && /^fashion-mnist(:|$)/.test(data)) {
    if (H === W) return { kind: 'fashion-mnist', data, note: null };
    return { kind: 'photos', data, note: `trained on Fashion-MNIST, but at ${H}×${W}: the page draws its images square, so photos are used` };
  }
  if (data === 'imagenet') return { kind: 'photos', data, note: null };
  if (!data) return { kind: 'photos', data, note: 'the file does not say what it was trained on: photos are used' };
  return { kind: 'photos', data, note: `trained on ${data}: not available in the page, so photos are used` };
}
