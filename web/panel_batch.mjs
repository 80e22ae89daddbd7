// panel_batch.mjs: the batch itself: a thumbnail per image (with where its crop came from) and the
// probe image.
import { $, P } from './page.mjs';


export function drawThumbs(r) {
  const box = $('thumbs');
  box.replaceChildren();
  r.thumbs.forEach((rgba, i) => {
    const c = document.createElement('canvas');
    c.width = r.W;
    c.height = r.H;
    c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), r.W, r.H), 0, 0);
    if (r.thumbUser[i]) c.className = 'user';
    const cr = r.crops && r.crops[i];
    const where = cr ? ` of ${cr.photo}: ${Math.round(cr.w)}×${Math.round(cr.h)} at (${Math.round(cr.x)}, ${Math.round(cr.y)})${cr.flip ? ', flipped' : ''}` : '';
    c.title = (r.thumbUser[i] ? 'your photo' : r.source === 'photos' ? (i === 0 ? 'the probe photo, centre crop' : `random crop ${i}`)
      : r.source === 'fashion-mnist' ? `Fashion-MNIST test image ${r.thumbIndex[i]}: ${P.model.dataset.names[r.thumbLabel[i]]}` : `procedural image ${i}`) + where;
    box.appendChild(c);
  });
  const pc = $('probe-canvas');
  pc.width = r.W;
  pc.height = r.H;
  if (r.thumbs[0]) pc.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(r.thumbs[0]), r.W, r.H), 0, 0);
}
