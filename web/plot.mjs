// plot.mjs: the page's small SVG plotting: one renderPlot(container, spec) for every chart, with
// axes (linear or log), bands, legends, a text summary for screen readers, redraw on resize, and a
// hover tooltip (#plot-tip) that shows the values of the point nearest the pointer. COLORS: one
// palette, one meaning per colour on every plot. No page state: panels call renderPlot with data.

const SVG_NS = 'http://www.w3.org/2000/svg';
export function el(tag, attrs = {}, parent) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function niceStep(span, n) {
  const raw = span / Math.max(1, n), p = 10 ** Math.floor(Math.log10(raw)), f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}
export function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  if (a >= 100) return v.toFixed(0);
  return String(Number(v.toPrecision(3)));
}

// An axis: type 'lin' or 'log', domain [min, max] (padded and made nice here), and the pixel range.
function makeScale(spec, r0, r1) {
  let { min, max } = spec;
  if (!(Number.isFinite(min) && Number.isFinite(max))) { min = 0; max = 1; }
  if (spec.type === 'log') {
    min = Math.max(min, 1e-12);
    max = Math.max(max, min * 1.0001);
    let l0 = Math.log10(min), l1 = Math.log10(max);
    if (!spec.exact) { const pad = Math.max((l1 - l0) * 0.06, 0.05); l0 -= pad; l1 += pad; }
    // at least 0.6 decades, so that the 1-2-5 ticks give two labels even for a single point
    if (!spec.ticks && l1 - l0 < 0.6) { const c = (l0 + l1) / 2; l0 = c - 0.3; l1 = c + 0.3; }
    const f = (v) => r0 + ((Math.log10(Math.max(v, 1e-30)) - l0) / (l1 - l0)) * (r1 - r0);
    let ticks = spec.ticks;
    if (!ticks) {
      ticks = [];
      const span = l1 - l0;
      const mult = span < 1.2 ? [1, 2, 5] : span < 2.5 ? [1, 3] : [1];
      for (let e = Math.floor(l0); e <= Math.ceil(l1); e++) for (const m of mult) ticks.push(m * 10 ** e);
      ticks = ticks.filter((t) => Math.log10(t) >= l0 - 1e-9 && Math.log10(t) <= l1 + 1e-9);
      if (span > 6) ticks = ticks.filter((t, i) => i % 2 === 0);
    }
    return { f, ticks, lo: 10 ** l0, hi: 10 ** l1 };
  }
  if (max - min < 1e-12) { const c = min; min = c - (Math.abs(c) || 1) * 0.5; max = c + (Math.abs(c) || 1) * 0.5; }
  if (!spec.exact) { const pad = (max - min) * 0.06; if (spec.min !== 0 || min < 0) min -= pad; max += pad; }
  const step = spec.integer ? Math.max(1, niceStep(max - min, spec.nticks || 5)) : niceStep(max - min, spec.nticks || 5);
  const ticks = spec.ticks || [];
  if (!spec.ticks) for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-6; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  const f = (v) => r0 + ((v - min) / (max - min)) * (r1 - r0);
  return { f, ticks, lo: min, hi: max };
}

// renderPlot(container, { width, height, x, y, series, legend, vlines, empty, data })
//   series: { kind: 'line'|'dots'|'bars', points: [[x, y], ...], color, width, r, dash, opacity, hollow,
//             barWidth (x units), onClick(i), highlight (index) }
//   bands: [{ from, to, label }] shaded x ranges labelled under the axis (the stages of the network)
// The SVG is drawn at the container's pixel width (text stays at its size) and redrawn on resize.
const drawn = new Map();
const resizer = new ResizeObserver((entries) => {
  for (const e of entries) {
    const d = drawn.get(e.target);
    if (d && Math.abs(e.target.clientWidth - d.width) > 1) renderPlot(e.target, d.spec);
  }
});
export function renderPlot(container, spec) {
  const W = Math.max(200, container.clientWidth || spec.width || 480), H = spec.height || 200;
  if (!drawn.has(container)) resizer.observe(container);
  drawn.set(container, { spec, width: W });
  const m = { l: 48, r: 12, t: spec.legend ? 24 : 10, b: spec.x.label ? 32 : 20, ...(spec.margin || {}) };
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': spec.title || plotSummary(spec) });
  const X = makeScale(spec.x, m.l, W - m.r), Y = makeScale(spec.y, H - m.b, m.t);
  // grid and ticks
  for (const t of Y.ticks) {
    const py = Y.f(t);
    if (py < m.t - 0.5 || py > H - m.b + 0.5) continue;
    el('line', { x1: m.l, x2: W - m.r, y1: py, y2: py, class: 'gridline' }, svg);
    el('text', { x: m.l - 5, y: py + 3.5, 'text-anchor': 'end', class: 'tick' }, svg).textContent = (spec.y.format || fmt)(t);
  }
  if (!spec.x.hideTicks) {
    for (const t of X.ticks) {
      const px = X.f(t);
      if (px < m.l - 0.5 || px > W - m.r + 0.5) continue;
      el('line', { x1: px, x2: px, y1: H - m.b, y2: H - m.b + 4, class: 'axis' }, svg);
      el('text', { x: px, y: H - m.b + 14, 'text-anchor': 'middle', class: 'tick' }, svg).textContent = (spec.x.format || fmt)(t);
    }
  }
  el('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis' }, svg);
  el('line', { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'axis' }, svg);
  if (spec.x.label) el('text', { x: (m.l + W - m.r) / 2, y: H - 3, 'text-anchor': 'middle', class: 'label' }, svg).textContent = spec.x.label;
  if (spec.y.label) el('text', { x: 11, y: (m.t + H - m.b) / 2, transform: `rotate(-90 11 ${(m.t + H - m.b) / 2})`, 'text-anchor': 'middle', class: 'label' }, svg).textContent = spec.y.label;
  (spec.bands || []).forEach((b, i) => {
    const x0 = X.f(b.from), x1 = X.f(b.to);
    if (i % 2 === 1) el('rect', { x: x0, y: m.t, width: x1 - x0, height: H - m.t - m.b, fill: '#f3f5f9' }, svg);
    if (b.label && x1 - x0 > b.label.length * 5.5) el('text', { x: (x0 + x1) / 2, y: H - m.b + 13, 'text-anchor': 'middle', class: 'tick' }, svg).textContent = b.label;
  });
  const clipId = `clip${Math.random().toString(36).slice(2)}`;
  el('rect', { x: m.l, y: m.t - 2, width: W - m.l - m.r, height: H - m.t - m.b + 4 }, el('clipPath', { id: clipId }, svg));
  const body = el('g', { 'clip-path': `url(#${clipId})` }, svg);
  const cy = (v) => Math.max(-1e4, Math.min(1e4, Y.f(v)));
  const hoverPts = [];   // [px, py, text]: what a pointer near (px, py) is told
  for (const s of spec.series || []) {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (spec.y.type !== 'log' || p[1] > 0));
    if (s.hover) s.points.forEach((p, i) => {
      if (Number.isFinite(p[0]) && Number.isFinite(p[1]) && (spec.y.type !== 'log' || p[1] > 0)) hoverPts.push([X.f(p[0]), cy(p[1]), s.hover(p, i)]);
    });
    if (s.kind === 'line') {
      if (pts.length < 2) continue;
      el('polyline', {
        points: pts.map((p) => `${X.f(p[0]).toFixed(1)},${cy(p[1]).toFixed(1)}`).join(' '), fill: 'none', stroke: s.color,
        'stroke-width': s.width || 1.5, 'stroke-dasharray': s.dash, opacity: s.opacity, 'stroke-linejoin': 'round',
      }, body);
    } else if (s.kind === 'dots') {
      const g = el('g', { opacity: s.opacity }, body);
      for (const p of pts) {
        el('circle', {
          cx: X.f(p[0]).toFixed(1), cy: cy(p[1]).toFixed(1), r: s.r || 2.5,
          fill: s.hollow ? 'none' : s.color, stroke: s.hollow ? s.color : 'none', 'stroke-width': s.hollow ? 1 : 0,
        }, g);
      }
    } else if (s.kind === 'bars') {
      const bw = Math.max(1, Math.abs(X.f(s.barWidth || 0.8) - X.f(0)));
      const base = spec.y.type === 'log' ? H - m.b : cy(0);
      s.points.forEach((p, i) => {
        if (!Number.isFinite(p[1])) return;
        const py = cy(p[1]);
        const r = el('rect', {
          x: (X.f(p[0]) - bw / 2).toFixed(1), y: Math.min(py, base).toFixed(1), width: bw.toFixed(1),
          height: Math.max(0.5, Math.abs(base - py)).toFixed(1), fill: i === s.highlight ? s.highlightColor || s.color : s.color,
          opacity: i === s.highlight ? 1 : s.opacity ?? 1, class: s.onClick ? 'bar' : undefined,
        }, body);
        if (s.titles) el('title', {}, r).textContent = s.titles[i];
        if (s.onClick) {
          r.addEventListener('click', () => s.onClick(i));
          // keyboard: each clickable bar is a focusable button
          r.setAttribute('tabindex', '0');
          r.setAttribute('role', 'button');
          if (s.titles) r.setAttribute('aria-label', s.titles[i]);
          r.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); s.onClick(i); } });
        }
      });
    }
  }
  if (spec.legend) {
    // right-aligned in the band above the plot; the text width is estimated (5.6 px per character)
    let lx = W - m.r;
    const ly = 9;
    for (const it of [...spec.legend].reverse()) {
      el('text', { x: lx, y: ly + 4, 'text-anchor': 'end', class: 'legend' }, svg).textContent = it.label;
      const sx = lx - it.label.length * 5.6 - 19;
      if (it.kind === 'line') el('line', { x1: sx, x2: sx + 14, y1: ly, y2: ly, stroke: it.color, 'stroke-width': it.width || 2, 'stroke-dasharray': it.dash }, svg);
      else el('circle', { cx: sx + 7, cy: ly, r: 3.5, fill: it.hollow ? 'none' : it.color, stroke: it.color }, svg);
      lx = sx - 16;
    }
  }
  if (spec.empty) el('text', { x: (m.l + W - m.r) / 2, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', class: 'empty' }, svg).textContent = spec.empty;
  container.replaceChildren(svg);
  container._hover = hoverPts;
  container.dataset.hoverPoints = String(hoverPts.length);
  if (!container._hoverWired) {
    container._hoverWired = true;
    container.addEventListener('pointermove', (ev) => plotHover(container, ev));
    container.addEventListener('pointerleave', () => hideTip(container));
  }
  return svg;
}

// A chart's text summary for screen readers when its spec has no title: what is plotted against what,
// each legend entry with its number of points and range of values.
function plotSummary(spec) {
  if (spec.empty) return `${spec.y.label || 'chart'}: ${spec.empty}`;
  const parts = [], legend = spec.legend || [];
  const shown = (spec.series || []).filter((s) => s.kind !== 'line' || !(spec.series || []).some((t) => t !== s && t.points === s.points));
  shown.forEach((s, i) => {
    const ys = s.points.map((p) => p[1]).filter(Number.isFinite);
    if (!ys.length) return;
    const name = shown.length === legend.length ? legend[i].label : `series ${i + 1}`;
    parts.push(`${name}: ${ys.length} points, ${fmt(Math.min(...ys))} to ${fmt(Math.max(...ys))}`);
  });
  return `${spec.y.label || 'value'} against ${spec.x.label || 'x'}${parts.length ? ': ' + parts.join('; ') : ''}`;
}

// Hover: the point nearest the pointer (within 24 px) is marked and its values shown in a tooltip.
const tip = document.createElement('div');
tip.className = 'plot-tip';
tip.id = 'plot-tip';
tip.setAttribute('role', 'tooltip');
tip.hidden = true;
document.body.appendChild(tip);
function plotHover(container, ev) {
  const svg = container.querySelector('svg'), pts = container._hover || [];
  if (!svg || !pts.length) return hideTip(container);
  const r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal, k = r.width / vb.width;
  const mx = (ev.clientX - r.left) / k, my = (ev.clientY - r.top) / k;
  let best = null, bd = (24 / k) ** 2;
  for (const p of pts) {
    const d = (p[0] - mx) ** 2 + (p[1] - my) ** 2;
    if (d < bd) { bd = d; best = p; }
  }
  if (!best) return hideTip(container);
  let mark = svg.querySelector('.hover-mark');
  if (!mark) mark = el('circle', { class: 'hover-mark', r: 5 }, svg);
  mark.setAttribute('cx', best[0]);
  mark.setAttribute('cy', best[1]);
  tip.textContent = best[2];
  tip.hidden = false;
  tip.dataset.plot = container.id;
  const tx = r.left + best[0] * k, ty = r.top + best[1] * k;
  tip.style.left = `${Math.min(window.innerWidth - tip.offsetWidth - 4, Math.max(4, tx + 10))}px`;
  tip.style.top = `${Math.max(4, ty - tip.offsetHeight - 8)}px`;
}
function hideTip(container) {
  const mark = container.querySelector('.hover-mark');
  if (mark) mark.remove();
  if (tip.dataset.plot === container.id) tip.hidden = true;
}

export function extent(arrays, { positive = false } = {}) {
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (const v of a) if (Number.isFinite(v) && (!positive || v > 0)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo <= hi ? [lo, hi] : [positive ? 0.1 : 0, 1];
}
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
// One palette, one meaning per colour on every plot: batch statistics (and train mode) blue, running
// statistics orange, eval mode green, the distance |Δmean|/σ indigo, the variance ratio purple, loss
// dark grey, a "before" state and reference lines grey.
export const COLORS = {
  batch: css('--batch') || '#2563eb', running: css('--running') || '#d97706', eval: css('--eval') || '#0f9d76',
  dMean: '#4338ca', dMeanLight: '#a5b4fc', dVar: '#a21caf', loss: '#374151', before: '#c3c9d4', faint: '#98a0ae',
};

