"""Line charts drawn on the server as SVG: no JavaScript library, works offline, and a test
can read what it drew (one ``<polyline>`` per series)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568")
WIDTH, HEIGHT = 440, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 10, 24, 36


def fmt(value: float, unit: str) -> str:
    """``value`` for an axis label: bytes in KiB/MiB/GiB, others with a short suffix."""
    if unit == "bytes":
        for suffix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{unit}"
    return f"{value:.3g}{unit}"


def line_chart(title: str, unit: str, series: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """An SVG chart of ``series`` (label -> [(time, value)]), time on the x axis."""
    points = [pt for values in series.values() for pt in values]
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="{_LEFT}" y="15" font-size="12" font-weight="600">{escape(title)}</text>'
    )
    if not points:
        return head + f'<text x="{_LEFT}" y="{HEIGHT // 2}" fill="#888">no data yet</text></svg>'
    t0 = min(t for t, _ in points)
    span = max(max(t for t, _ in points) - t0, 1.0)  # one sample: a second wide
    low = min([0.0] + [v for _, v in points])  # from zero, or below it for negative values
    top = max(max(v for _, v in points) - low, 1e-9) * 1.1 + low
    w, h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = [head]
    for i in range(3):  # grid lines and y labels at 0, half, top
        y = _TOP + h - h * i / 2
        value = low + (top - low) * i / 2
        out.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{escape(fmt(value, unit))}</text>'
        )
    out.append(
        f'<text x="{WIDTH - _RIGHT}" y="{_TOP + h + 14}" font-size="10" text-anchor="end" '
        f'fill="#555">last {span:.0f} s</text>'
    )
    legend_x = _LEFT
    for i, (label, values) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(
            f"{_LEFT + w * (t - t0) / span:.1f},{_TOP + h - h * (v - low) / (top - low):.1f}"
            for t, v in values
        )
        if len(values) == 1:  # one point: a dot, so a fresh chart is not blank
            cx, cy = coords.split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        out.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}">'
            f"<title>{escape(label)}</title></polyline>"
        )
        if i < 4:
            short = label if len(label) <= 22 else label[:20] + "…"
            out.append(
                f'<rect x="{legend_x}" y="{HEIGHT - 12}" width="8" height="8" fill="{color}"/>'
                f'<text x="{legend_x + 11}" y="{HEIGHT - 4}" font-size="10">{escape(short)}</text>'
            )
            legend_x += 12 + 6 * len(short) + 10
    out.append("</svg>")
    return "".join(out)
