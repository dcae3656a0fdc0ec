#!/usr/bin/env python3
"""Render fgdesk/resources/fgdesk.svg to the PNG icons in fgdesk/resources/icons/.

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py

Writes icons/fgdesk-<size>.png for every size in SIZES. The PNGs are committed, so
this only needs running again after the SVG changes. Needs PySide6 (QtSvg ships in
PySide6-Essentials); no display is needed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "fgdesk" / "resources" / "fgdesk.svg"
OUT_DIR = ROOT / "fgdesk" / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256, 512)
# Small icons are drawn larger and scaled down, which keeps thin strokes smooth.
SUPERSAMPLE_BELOW = 64
SUPERSAMPLE = 4


def render(svg_path: Path, size: int):
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg_path))
    if not renderer.isValid():
        raise SystemExit(f"{svg_path}: QtSvg could not parse this file")
    draw = size * SUPERSAMPLE if size < SUPERSAMPLE_BELOW else size
    image = QImage(draw, draw, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    renderer.render(painter, QRectF(0, 0, draw, draw))
    painter.end()
    if draw != size:
        image = image.scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return image.convertToFormat(QImage.Format.Format_ARGB32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=SVG, help="source SVG (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="pixel sizes")
    args = parser.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (keeps Qt alive)
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        target = args.out / f"fgdesk-{size}.png"
        image = render(args.svg, size)
        if not image.save(str(target), "PNG"):
            raise SystemExit(f"could not write {target}")
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
