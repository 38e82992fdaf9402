"""The report's charts as inline SVG: histograms with cuts, projections, class
balance and vector profiles (every value from the data escaped)."""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

from markupsafe import Markup


# SVG plots ------------------------------------------------------------------------------
def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def histogram_chart(h: dict, width: int = 300, height: int = 130) -> str:
    """The decision statistic's distribution on the class sample (square-root count
    scale, so a small group stays visible), the cut marked and the flagged side shaded."""

    edges, counts = h.get("edges"), h.get("counts")
    if not edges or not counts:
        return Markup("")
    left, right, top, bottom = 8, 8, 8, 22
    w, ht = width - left - right, height - top - bottom
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    peak = math.sqrt(max(counts) or 1)

    def x(v):
        return left + (v - lo) / span * w

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(h["detector"])} distribution">'
    ]
    cut = h.get("cut")
    if cut is not None and h.get("poisoned"):
        x0, x1 = (x(cut), left + w) if h.get("side", 1) > 0 else (left, x(cut))
        parts.append(f'<rect class="flagzone" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 0):.1f}" height="{ht}"/>')
    for i, c in enumerate(counts):
        if not c:
            continue
        bh = math.sqrt(c) / peak * ht
        bx = x(edges[i])
        bw = max(x(edges[i + 1]) - bx - 0.5, 0.5)
        parts.append(
            f'<rect class="bar" x="{bx:.1f}" y="{top + ht - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}">'
            f"<title>{esc(f'{edges[i]:.3g} to {edges[i + 1]:.3g}: {c:,} rows')}</title></rect>"
        )
    if cut is not None:
        cx = x(cut)
        parts.append(f'<line class="cut" x1="{cx:.1f}" x2="{cx:.1f}" y1="{top - 4}" y2="{top + ht}"><title>cut {cut:.3g}</title></line>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + w}" y1="{top + ht}" y2="{top + ht}"/>')
    # the range's ends, unless the cut's label would sit on one of them
    near = (lambda px: cut is not None and abs(px - x(cut)) < 34)
    if not near(left):
        parts.append(f'<text class="tick" x="{left}" y="{height - 6}">{esc(f"{lo:.3g}")}</text>')
    if not near(left + w):
        parts.append(f'<text class="tick" x="{left + w}" y="{height - 6}" text-anchor="end">{esc(f"{hi:.3g}")}</text>')
    if cut is not None:
        parts.append(f'<text class="tick cutlabel" x="{x(cut):.1f}" y="{height - 6}" text-anchor="middle">cut</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def scatter_chart(p: dict, size: int = 300) -> str:
    """The class sample on its top two principal directions; quarantined rows red,
    rows flagged but left by the budget orange."""

    xs, ys, marks, ids = p.get("x", []), p.get("y", []), p.get("mark", []), p.get("ids", [])
    if not xs:
        return Markup("")
    pad = 10
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    sx = (size - 2 * pad) / ((x_hi - x_lo) or 1.0)
    sy = (size - 2 * pad) / ((y_hi - y_lo) or 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {size} {size}" width="{size}" height="{size}" role="img" '
        'aria-label="2-D projection of the class">',
        f'<rect class="frame" x="0.5" y="0.5" width="{size - 1}" height="{size - 1}"/>',
    ]
    layers = {0: [], 1: [], 2: []}
    for x, y, m, i in zip(xs, ys, marks, ids):
        cx = pad + (x - x_lo) * sx
        cy = size - pad - (y - y_lo) * sy
        if m:
            layers[m].append(
                f'<circle class="pt m{m}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.2"><title>{esc(i)}</title></circle>'
            )
        else:
            layers[0].append(f'<circle class="pt m0" cx="{cx:.1f}" cy="{cy:.1f}" r="2.2"/>')
    for m in (0, 1, 2):
        parts += layers[m]
    parts.append("</svg>")
    return Markup("".join(parts))


def balance_chart(classes: list[dict], width: int = 640) -> str:
    """Rows per class: clean, quarantined and rejected, as horizontal stacked bars."""

    classes = [c for c in classes if c.get("rows_read")][:200]
    if not classes:
        return Markup("")
    row_h, label_w, right = 18, 110, 90
    height = row_h * len(classes) + 10
    peak = max(c["rows_read"] for c in classes) or 1
    w = width - label_w - right
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="class balance">']
    for k, c in enumerate(classes):
        y = 5 + k * row_h
        x = label_w
        parts.append(f'<text class="tick" x="{label_w - 6}" y="{y + 12}" text-anchor="end">{esc(fmt_class(c["label"]))}</text>')
        for part, css in (("rows_clean", "clean"), ("rows_quarantined", "quarantined"), ("rows_rejected", "rejected")):
            n = c.get(part) or 0
            if not n:
                continue
            bw = n / peak * w
            parts.append(
                f'<rect class="seg {css}" x="{x:.1f}" y="{y}" width="{max(bw, 1):.1f}" height="{row_h - 4}">'
                f"<title>{esc(fmt_class(c['label']) + f': {n:,} {css}')}</title></rect>"
            )
            x += bw
        parts.append(f'<text class="tick" x="{x + 6:.1f}" y="{y + 12}">{c["rows_read"]:,}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def vector_chart(values: Sequence[float], width: int = 220, height: int = 44) -> str:
    """A vector's values as a bar profile (zero in the middle)."""
    peak = max((abs(v) for v in values), default=0.0) or 1.0
    n = len(values)
    bw = width / max(n, 1)
    mid = height / 2
    parts = [f'<svg class="vector" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="vector profile">']
    for i, v in enumerate(values):
        h = abs(v) / peak * (mid - 1)
        y = mid - h if v >= 0 else mid
        parts.append(f'<rect x="{i * bw:.2f}" y="{y:.1f}" width="{max(bw, 0.6):.2f}" height="{max(h, 0.3):.1f}"/>')
    parts.append(f'<line x1="0" x2="{width}" y1="{mid}" y2="{mid}" class="axis"/></svg>')
    return "".join(parts)


# filters ---------------------------------------------------------------------------------
def fmt_num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def fmt_sci(v: Any) -> str:
    """A probability or a ratio in two significant digits: 0.0002, 3.1e-07, 12."""
    return "—" if v is None else f"{float(v):.2g}"


def fmt_ratio(v: Any) -> str:
    """p / level: 2 significant digits below 100 (0.2, 1.3e-06), whole numbers above."""
    return "—" if v is None else f"{float(v):,.0f}" if float(v) >= 100 else f"{float(v):.2g}"


def fmt_pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.1f} %"


def fmt_round(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), 3)


def fmt_class(v: Any) -> str:
    return "null" if v is None else str(v)
