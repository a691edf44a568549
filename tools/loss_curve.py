#!/usr/bin/env python3
"""Draw a training run's loss.csv as an SVG (mean loss per bin of steps, log scale) and print the
binned table; standard library only. Usage: loss_curve.py loss.csv out.svg [bin]"""
import csv
import math
import sys


def bins(path, width):
    # A resumed run appends the steps after its checkpoint again; the later line wins.
    rows = sorted({int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(path))}.items())
    out = []
    for start in range(0, rows[-1][0], width):
        vals = [(s, l) for s, l in rows if start < s <= start + width]
        if vals:
            out.append((vals[-1][0], sum(l for _, l in vals) / len(vals)))
    return out


def svg(points, path):
    w, h, pad = 640, 320, 48
    xs = [p[0] for p in points]
    ys = [math.log10(p[1]) for p in points]
    x0, x1, y0, y1 = 0, max(xs), math.floor(min(ys)), math.ceil(max(ys))
    px = lambda x: pad + (w - 2 * pad) * (x - x0) / max(x1 - x0, 1)
    py = lambda y: h - pad - (h - 2 * pad) * (y - y0) / max(y1 - y0, 1e-9)
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    ticks = "".join(
        f'<text x="{pad - 6}" y="{py(e) + 4:.1f}" text-anchor="end" font-size="11">1e{e}</text>'
        f'<line x1="{pad}" x2="{w - pad}" y1="{py(e):.1f}" y2="{py(e):.1f}" stroke="#ddd"/>'
        for e in range(y0, y1 + 1)
    )
    with open(path, "w") as f:
        f.write(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
            f'<rect width="{w}" height="{h}" fill="white"/>{ticks}'
            f'<polyline fill="none" stroke="#1f5fa8" stroke-width="2" points="{line}"/>'
            f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="12">step (0 to {x1})</text>'
            f'<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})" text-anchor="middle">mean training loss (MSE of the prediction)</text>'
            "</svg>\n"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    pts = bins(sys.argv[1], width)
    svg(pts, sys.argv[2])
    shown = pts[:: max(1, len(pts) // 12)]
    for step, loss in shown + ([pts[-1]] if shown[-1] != pts[-1] else []):
        print(f"| {step} | {loss:.4f} |")
