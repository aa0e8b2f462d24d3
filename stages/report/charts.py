"""Geometry for the report's SVG charts: positions and sizes computed here, drawn by the
macros in templates/charts.html.j2, so no markup is built from strings in Python."""

from __future__ import annotations

import math
from typing import Any

from stages.report.text import as_words, number

WIDTH = 760
LIGHT_COLORS = {"#cbd5e1", "#f59e0b", "#a78bfa", "#93c5fd", "#fcd34d", "#60a5fa"}


def _nice_step(maximum: float, ticks: int = 4) -> float:
    """A round gridline step (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` lines."""
    raw = max(maximum, 1) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if raw <= m * power)


def _tidy(value: float) -> float:
    """A sum of points (floats) to one decimal, so that 0.1 + 0.2 shows as 0.3."""
    return round(value, 1) if isinstance(value, float) else value


def hbar_chart(
    rows: list[tuple[str, float, str, str]], title: str, maximum: float | None = None
) -> dict[str, Any]:
    """Horizontal bars: (label, value, colour, value as text) each, on one common scale."""
    label_w, text_w, bar_h, gap = 190, 150, 22, 8
    plot = WIDTH - label_w - text_w
    top = max([maximum or 0, *(value for _, value, _, _ in rows)]) or 1
    bars = []
    for i, (name, value, color, text) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        bar = plot * max(value, 0) / top
        bar = max(bar, 2) if value > 0 else 0
        bars.append(
            {
                "label": name,
                "y": y,
                "middle": y + bar_h / 2,
                "bar": f"{bar:.1f}",
                "color": color,
                "text": text,
            }
        )
    return {
        "kind": "hbar",
        "title": title,
        "width": WIDTH,
        "height": gap + len(rows) * (bar_h + gap),
        "label_x": label_w - 10,
        "x": label_w,
        "plot": plot,
        "bar_h": bar_h,
        "value_x": label_w + plot + 8,
        "rows": bars,
    }


def stacked_chart(rows: list[tuple[str, list[tuple[str, int, str]]]], title: str) -> dict[str, Any]:
    """One bar per row, split into (name, count, colour) segments, on one common scale."""
    label_w, text_w, bar_h, gap = 190, 110, 26, 10
    plot = WIDTH - label_w - text_w
    top = max((sum(n for _, n, _ in segments) for _, segments in rows), default=0) or 1
    bars = []
    for i, (name, segments) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        x = float(label_w)
        parts = []
        for part, count, color in segments:
            if count <= 0:
                continue
            w = plot * count / top
            fits = w >= 8 * len(number(count)) + 8
            parts.append(
                {
                    "name": part,
                    "count": number(count),
                    "color": color,
                    "x": f"{x:.1f}",
                    "w": f"{w:.1f}",
                    "center": f"{x + w / 2:.1f}" if fits else None,
                    "ink": "dark" if color in LIGHT_COLORS else "light",
                }
            )
            x += w
        bars.append(
            {
                "label": name,
                "y": y,
                "middle": y + bar_h / 2,
                "segments": parts,
                "total_x": f"{x + 8:.1f}",
                "total": number(_tidy(sum(n for _, n, _ in segments))),
            }
        )
    return {
        "kind": "stacked",
        "title": title,
        "width": WIDTH,
        "height": gap + len(rows) * (bar_h + gap),
        "label_x": label_w - 10,
        "bar_h": bar_h,
        "rows": bars,
    }


def line_chart(
    labels: list[str], series: list[tuple[str, list[int], str]], title: str
) -> dict[str, Any]:
    """Lines over weeks with round gridlines; every point carries its value as a tooltip."""
    height = 300
    left, right, top, bottom = 56, 24, 16, 40
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    highest = max((v for _, values, _ in series for v in values), default=0)
    step = max(1, round(_nice_step(highest)))
    y_max = step * max(1, math.ceil(highest / step))
    n = len(labels)

    def x(i: int) -> str:
        return f"{left + (plot_w / 2 if n == 1 else i * plot_w / (n - 1)):.1f}"

    def y(v: float) -> str:
        return f"{top + plot_h - plot_h * v / y_max:.1f}"

    every = max(1, math.ceil(n / 10))
    return {
        "kind": "line",
        "title": title,
        "width": WIDTH,
        "height": height,
        "left": left,
        "right": WIDTH - right,
        "ticks": [
            {"y": y(t), "text": number(t), "stroke": "#9ca3af" if t == 0 else "#e5e7eb"}
            for t in range(0, y_max + 1, step)
        ],
        "label_y": height - bottom + 20,
        "labels": [
            {"x": x(i), "text": text}
            for i, text in enumerate(labels)
            if i % every == 0 or i == n - 1
        ],
        "series": [
            {
                "color": color,
                "points": " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values)),
                "dots": [
                    {
                        "x": x(i),
                        "y": y(v),
                        "title": f"{as_words(name)}, week of {labels[i]}: {number(v)}",
                    }
                    for i, v in enumerate(values)
                ]
                if n <= 60
                else [],
            }
            for name, values, color in series
        ],
    }
