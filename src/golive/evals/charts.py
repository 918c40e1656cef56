"""Inline SVG scatter charts for the HTML report: accuracy against latency and cost.

Plain SVG strings, so the report is one self-contained file with no script or
plotting library behind it.
"""

from __future__ import annotations

import math
from html import escape

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf"]
W, H = 420, 300
L, R, T, B = 60, 20, 30, 50  # margins


def color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if x <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def scatter(points: list[dict], x_label: str, y_label: str, title: str, chart_id: str) -> str:
    """points: {label, x, y, y_err (or None), size (0..1, or None), color}."""
    pts = [p for p in points if p["x"] is not None and p["y"] is not None]
    xmax = _nice_max(max((p["x"] for p in pts), default=1.0) * 1.1)
    pw, ph = W - L - R, H - T - B

    def sx(x: float) -> float:
        return L + pw * x / xmax

    def sy(y: float) -> float:
        return T + ph * (1 - max(0.0, min(1.0, y)))

    out = [f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" class="ct">{escape(title)}</text>']
    for i in range(6):  # y grid: 0, 0.2, ... 1
        y = i / 5
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                   f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for i in range(5):
        x = xmax * i / 4
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{T}" y2="{T + ph}" class="grid"/>'
                   f'<text x="{sx(x):.1f}" y="{T + ph + 16}" text-anchor="middle">'
                   f'{_fmt(x)}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 8}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text transform="translate(14 {T + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    for p in pts:
        cx, cy = sx(p["x"]), sy(p["y"])
        if p.get("y_err"):
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{sy(p["y"] + p["y_err"]):.1f}" '
                       f'y2="{sy(p["y"] - p["y_err"]):.1f}" stroke="{p["color"]}"/>')
        r = 5 + 10 * (p["size"] if p.get("size") is not None else 0.3)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{p["color"]}" '
                   f'fill-opacity="0.6" stroke="{p["color"]}" class="point" '
                   f'data-variant="{escape(p["label"])}"><title>{escape(p["label"])}: '
                   f'{y_label} {p["y"]:.3f}, {x_label} {_fmt(p["x"])}</title></circle>'
                   f'<text x="{cx + r + 3:.1f}" y="{cy + 4:.1f}" class="pl">'
                   f'{escape(p["label"])}</text>')
    out.append("</svg>")
    return "".join(out)
