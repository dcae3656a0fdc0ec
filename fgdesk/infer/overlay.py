"""Colour heatmaps and blend them over images (numpy + Pillow only; no plotting libraries).

The perceptual colormaps (viridis, magma, inferno by Nathaniel Smith and Stefan van der
Walt, released under CC0) are stored as knots sampled from their published 256-entry
tables and interpolated back to 256 entries; the difference is at most a few levels
of 255. jet and gray are computed.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# (table index, r, g, b) knots; every 16th entry plus a few where the curve bends.
_VIRIDIS_KNOTS = (
    (0, 0.267004, 0.004874, 0.329415), (16, 0.282327, 0.094955, 0.417331),
    (32, 0.278826, 0.175490, 0.483397), (48, 0.258965, 0.251537, 0.524736),
    (64, 0.229739, 0.322361, 0.545706), (80, 0.199430, 0.387607, 0.554642),
    (96, 0.172719, 0.448791, 0.557885), (112, 0.149039, 0.508051, 0.557250),
    (128, 0.127568, 0.566949, 0.550556), (144, 0.120638, 0.625828, 0.533488),
    (160, 0.157851, 0.683765, 0.501686), (176, 0.246070, 0.738910, 0.452024),
    (192, 0.369214, 0.788888, 0.382914), (208, 0.515992, 0.831158, 0.294279),
    (224, 0.678489, 0.863742, 0.189503), (240, 0.845561, 0.887322, 0.099702),
    (255, 0.993248, 0.906157, 0.143936),
)
_MAGMA_KNOTS = (
    (0, 0.001462, 0.000466, 0.013866), (16, 0.039608, 0.031090, 0.133515),
    (32, 0.113094, 0.065492, 0.276784), (48, 0.211718, 0.061992, 0.418647),
    (64, 0.316654, 0.071690, 0.485380), (80, 0.414709, 0.110431, 0.504662),
    (96, 0.512831, 0.148179, 0.507648), (112, 0.613617, 0.181811, 0.498536),
    (128, 0.716387, 0.214982, 0.475290), (144, 0.816914, 0.255895, 0.436461),
    (160, 0.904281, 0.319610, 0.388137), (176, 0.960949, 0.418323, 0.359630),
    (192, 0.986700, 0.535582, 0.382210), (208, 0.996096, 0.653659, 0.446213),
    (224, 0.996898, 0.769591, 0.534892), (240, 0.992440, 0.884330, 0.640099),
    (248, 0.989434, 0.941470, 0.697519), (255, 0.987053, 0.991438, 0.749504),
)
_INFERNO_KNOTS = (
    (0, 0.001462, 0.000466, 0.013866), (16, 0.042253, 0.028139, 0.141141),
    (32, 0.129285, 0.047293, 0.290788), (48, 0.238273, 0.036621, 0.396353),
    (64, 0.341500, 0.062325, 0.429425), (80, 0.441207, 0.099338, 0.431594),
    (96, 0.540920, 0.134729, 0.415123), (112, 0.640135, 0.171438, 0.381065),
    (128, 0.735683, 0.215906, 0.330245), (144, 0.822386, 0.275197, 0.266085),
    (160, 0.894305, 0.353399, 0.193584), (176, 0.946965, 0.449191, 0.115272),
    (192, 0.978422, 0.557937, 0.034931), (200, 0.985952, 0.615750, 0.025592),
    (208, 0.987874, 0.675267, 0.065257), (224, 0.974638, 0.797692, 0.206332),
    (240, 0.947594, 0.917399, 0.410665), (248, 0.954529, 0.965896, 0.540361),
    (255, 0.988362, 0.998364, 0.644924),
)


def _from_knots(knots: tuple[tuple[float, ...], ...]) -> np.ndarray:
    table = np.asarray(knots, dtype=np.float64)
    positions = np.arange(256)
    channels = [np.interp(positions, table[:, 0], table[:, c]) for c in (1, 2, 3)]
    return np.clip(np.round(np.stack(channels, axis=1) * 255), 0, 255).astype(np.uint8)


def _jet() -> np.ndarray:
    """MATLAB's jet: dark blue -> blue -> cyan -> yellow -> red -> dark red, piecewise linear."""
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(np.minimum(4 * x - 1.5, -4 * x + 4.5), 0, 1)
    green = np.clip(np.minimum(4 * x - 0.5, -4 * x + 3.5), 0, 1)
    blue = np.clip(np.minimum(4 * x + 0.5, -4 * x + 2.5), 0, 1)
    return np.round(np.stack([red, green, blue], axis=1) * 255).astype(np.uint8)


def _gray() -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8)
    return np.stack([ramp, ramp, ramp], axis=1)


# name -> (256, 3) uint8 lookup table; index 0 is the map's low end.
COLORMAPS: dict[str, np.ndarray] = {
    "inferno": _from_knots(_INFERNO_KNOTS),
    "viridis": _from_knots(_VIRIDIS_KNOTS),
    "magma": _from_knots(_MAGMA_KNOTS),
    "jet": _jet(),
    "gray": _gray(),
}
for _table in COLORMAPS.values():
    _table.setflags(write=False)  # shared module data: nobody may recolour it by accident


def colorize(heatmap: Any, colormap: str = "inferno") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours. NaN counts as 0; values are clipped."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if values.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H x W), got shape {values.shape}")
    indices = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
    return COLORMAPS[colormap][indices]


def _fit_to(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float map to (width, height) with bilinear filtering, if it differs."""
    if heatmap.shape[::-1] == size:
        return heatmap
    resized = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


OUTSIDE_FRAME = 0.4  # brightness left to the part of an image the network did not see


def render_overlay(image: Image.Image, heatmap: Any, colormap: str = "inferno", alpha: float = 0.5,
                   frame: tuple[float, float, float, float] | None = None) -> Image.Image:
    """The image with the coloured heatmap blended on top: (1 - alpha) * image + alpha * colour.

    The heatmap (values in [0, 1]) is resized to the image when their sizes differ. With a
    `frame` (left, top, right, bottom in the image's pixels: the part the network saw), the
    rest is dimmed and left uncoloured, so "not seen" never reads as "cold".
    Returns a new RGB image of the image's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    base = image.convert("RGB")
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    if values.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H x W), got shape {values.shape}")
    colours = colorize(_fit_to(values, base.size), colormap).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    blended = (1.0 - alpha) * pixels + alpha * colours
    if frame is not None:
        left, top, right, bottom = (int(round(v)) for v in frame)
        outside = np.ones(pixels.shape[:2], dtype=bool)
        outside[max(0, top):max(0, bottom), max(0, left):max(0, right)] = False
        blended[outside] = pixels[outside] * OUTSIDE_FRAME
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")


def heatmap_file_stem(source: str) -> str:
    """<parent folder>_<file stem>: dataset images often share names across class folders."""
    path = Path(source) if source else Path("image")
    parts = [_safe_name(path.parent.name), _safe_name(path.stem)]
    return "_".join(part for part in parts if part) or "image"


def save_heatmaps(prediction: Any, out_dir: str | os.PathLike[str], colormap: str = "inferno", alpha: float = 0.5) -> list[Path]:
    """Write one overlay PNG per map of a Prediction as <folder>_<stem>-<map>.png; returns the paths.

    A prediction with an error or without an image writes nothing; files of the same
    name are replaced.
    """
    out = Path(out_dir)
    if getattr(prediction, "error", None) or getattr(prediction, "image", None) is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    stem = heatmap_file_stem(str(getattr(prediction, "source", "")))
    written = []
    for key, heatmap in (prediction.maps or {}).items():
        path = out / f"{stem}-{_safe_name(key) or 'map'}.png"
        render_overlay(prediction.image, heatmap, colormap, alpha, getattr(prediction, "frame", None)).save(path, format="PNG")
        written.append(path)
    log.info("saved %d heatmap overlays of %s in %s", len(written), stem, out)
    return written
