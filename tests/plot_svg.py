#!/usr/bin/env python3
"""plot_svg.py: a small line plot written as SVG by hand (Python standard library only).

Used by tests/batch_size_experiment.py for demo-models/experiments/batch_size/plot.svg:

    python3 tests/plot_svg.py results.csv plot.svg     # x = batch_size (log2 axis), one line per
                                                      # column named in --y (default val_top1,val_top5)

As a module: line_plot(series, path, title=..., xlabel=..., ylabel=..., log2x=True, ymin=0, ymax=1).
series: [{"label": str, "color": "#rrggbb", "points": [(x, y), ...], "dash": bool}, ...]
"""
import argparse
import csv
import math
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _fmt(v):
    if v != 0 and abs(v) < 0.01:   # small ticks (learning rates): 0.003, not 0
        return f"{v:.3g}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_plot(series, path, title="", xlabel="", ylabel="", log2x=True, ymin=0.0, ymax=1.0,
              yticks=None, percent=True, width=640, height=400, note=""):
    left, right, top, bottom = 64, 170, 40, 56
    pw, ph = width - left - right, height - top - bottom
    xs = [x for s in series for x, _ in s["points"]]
    tx = (lambda v: math.log2(v)) if log2x else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    if x1 == x0:
        x1 = x0 + 1
    pad = 0.04 * (x1 - x0)
    x0, x1 = x0 - pad, x1 + pad

    def px(v):
        return left + (tx(v) - x0) / (x1 - x0) * pw

    def py(v):
        return top + (1 - (v - ymin) / (ymax - ymin)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    if title:
        out.append(f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="14" '
                   f'font-weight="bold">{escape(title)}</text>')
    # grid and y ticks
    if yticks is None:
        yticks = [ymin + (ymax - ymin) * k / 5 for k in range(6)]
    for v in yticks:
        y = py(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        lab = f"{100 * v:.0f}%" if percent else _fmt(v)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
    # x ticks at the data points
    for v in sorted(set(xs)):
        x = px(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{_fmt(v)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 14}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    # lines, markers, legend
    for i, s in enumerate(series):
        color = s.get("color") or PALETTE[i % len(PALETTE)]
        pts = sorted(s["points"])
        if not pts:
            continue
        d = " ".join(f"{'M' if k == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for k, (x, y) in enumerate(pts))
        dash = ' stroke-dasharray="5 4"' if s.get("dash") else ""
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}">'
                       f'<title>{escape(s["label"])}: B={_fmt(x)}, {100 * y:.1f}%</title></circle>')
        ly = top + 14 + 20 * i
        lx = left + pw + 12
        out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 28}" y="{ly}">{escape(s["label"])}</text>')
    if note:
        for k, line in enumerate(note.split("\n")):
            out.append(f'<text x="{left + pw + 12}" y="{top + ph - 40 + 14 * k}" font-size="10" '
                       f'fill="#666">{escape(line)}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--x", default="batch_size")
    ap.add_argument("--y", default="val_top1,val_top5")
    ap.add_argument("--title", default="Final eval accuracy against batch size")
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    series = []
    for col in a.y.split(","):
        pts = [(float(r[a.x]), float(r[col])) for r in rows if r.get(col) not in (None, "")]
        series.append({"label": col, "points": pts})
    line_plot(series, a.svg, title=a.title, xlabel=f"{a.x} (log2 axis)", ylabel="accuracy")


if __name__ == "__main__":
    main()
