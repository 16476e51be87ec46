"""``reliability.png``: how the intervals' coverage follows the level, before and after calibration.

``dwgf calibrate`` draws it from its own images (:func:`dwgf.calibration.reliability_table`). Left: the empirical coverage
against the nominal level at :data:`~dwgf.calibration.RELIABILITY_LEVELS` (0.5 to 0.99), on every pixel and on the
unobserved ones; *before*: the particles' own central interval at that level (their quantiles, as ``coverage90``), *after*:
the calibrated interval of the run's mode at that level, measured out of sample by two-fold cross-fitting (calibrated on
the even-numbered images, measured on the odd ones, and the other way round, averaged; a level for which half the images
are too few is left out). A well calibrated method lies on the diagonal. Right: the intervals' mean width at each level.
This module only draws (PIL); :func:`dwgf.calibration.reliability_table` computes the figures.
"""

from __future__ import annotations

import io
from typing import Sequence


CURVES = ("before, every pixel", "before, unobserved", "after, every pixel", "after, unobserved")
COLORS = ((150, 180, 230), (240, 170, 120), (30, 80, 200), (200, 40, 30))


def reliability_png(rows: Sequence[dict], title: str) -> bytes:
    """The picture's PNG bytes from :func:`dwgf.calibration.reliability_table`'s rows (see the module docstring)."""
    from PIL import Image, ImageDraw

    panel, margin, top = 300, 46, 36
    sheet = Image.new("RGB", (2 * (panel + margin) + 50, panel + top + 96), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black")
    levels = [r["level"] for r in rows]
    widths = [w for r in rows for w in r["width"] if w == w]
    wmax = max(widths + [1e-3]) * 1.05
    for p, (key, low, high, label) in enumerate((("coverage", 0.4, 1.0, "coverage"), ("width", 0.0, wmax, "mean width"))):
        x0, y0 = margin + p * (panel + margin + 20), top

        def at(level: float, value: float, x0=x0, y0=y0, low=low, high=high) -> tuple[float, float]:
            return (x0 + (level - 0.45) / 0.55 * panel, y0 + panel - (value - low) / (high - low) * panel)

        draw.rectangle([x0, y0, x0 + panel, y0 + panel], outline="black")
        for t in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            x, _ = at(t, low)
            draw.line([x, y0 + panel, x, y0 + panel + 4], fill="black")
            draw.text((x - 8, y0 + panel + 6), f"{t:.1f}", fill="black")
        for k in range(5):
            v = low + (high - low) * k / 4
            _, y = at(0.45, v)
            draw.line([x0 - 4, y, x0, y], fill="black")
            draw.text((x0 - 42, y - 6), f"{v:.3g}", fill="black")
        draw.text((x0 + panel // 2 - 30, y0 + panel + 20), "nominal level", fill="black")
        draw.text((x0 + 4, y0 + 4), label, fill="black")
        if key == "coverage":
            draw.line([at(0.45, 0.45), at(1.0, 1.0)], fill=(170, 170, 170))
        for c in range(len(CURVES)):
            points = [at(level, r[key][c]) for level, r in zip(levels, rows) if r[key][c] == r[key][c] and low <= r[key][c] <= high]
            if len(points) > 1:
                draw.line(points, fill=COLORS[c], width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLORS[c])
    for c, name in enumerate(CURVES):
        x, y = margin + (c % 2) * 260, top + panel + 44 + (c // 2) * 16
        draw.rectangle([x, y + 2, x + 14, y + 10], fill=COLORS[c])
        draw.text((x + 20, y), name, fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
