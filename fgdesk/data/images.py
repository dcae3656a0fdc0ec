"""Safe image decoding: every failure becomes an ImageDecodeError with a short human reason.

Datasets in the wild hold CMYK JPEGs, 16-bit PNGs, palette images with transparency,
phone photos that rely on EXIF orientation, truncated downloads and the odd text file
named ``.jpg``. Everything that reads pixels in fgdesk goes through `load_rgb`, so the
rest of the code only ever sees 8-bit RGB or a clean error it can report by path.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Refused before any pixel is decoded; about a 10,000 x 10,000 photo.
MAX_PIXELS = 100_000_000

# Background for transparent pixels: mid-grey biases neither towards black nor white.
ALPHA_BACKGROUND = (128, 128, 128)

# Only these decoders may run. A file named .jpg is never handed to EPS (Ghostscript)
# or other exotic plugins, whatever its first bytes say. (JPEG also yields MPO files.)
_ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "TIFF", "WEBP")

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}


class ImageDecodeError(Exception):
    """An image file cannot be used; `.reason` is short enough for a table cell."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keeps the two-argument form across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """True when the file name has one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) as displayed (after EXIF orientation), read from the header only."""
    path = Path(path)
    with _open_checked(path) as image:
        try:
            orientation = _orientation(image, allow_load=False)
        except Exception as exc:  # corrupt EXIF in an otherwise readable header
            raise ImageDecodeError(path, _describe(exc, "unreadable metadata")) from exc
        width, height = image.size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def load_rgb(
    path: str | os.PathLike[str],
    crop_bottom: int = 0,
    draft_size: tuple[int, int] | None = None,
    min_short_side: int = 0,
) -> Image.Image:
    """Decode `path` to an 8-bit RGB image with EXIF orientation applied.

    `crop_bottom` removes that many rows of the displayed image (scaled when
    `draft_size` made the decoder shrink it). `draft_size=(w, h)` lets JPEG decode at
    1/2, 1/4 or 1/8 scale while staying at least that big: a fast path for thumbnails.
    `min_short_side=n` does the same for training and evaluation: a JPEG is decoded at
    the smallest of those scales whose shorter side, after the banner crop, keeps at
    least n pixels. A camera's 12-megapixel photo then decodes about ten times faster
    for a network that sees a few hundred pixels of it.
    """
    path = Path(path)
    with _open_checked(path) as image:
        try:
            full_width, full_height = image.size
            orientation = _orientation(image, allow_load=True)
            if draft_size is not None and image.format in ("JPEG", "MPO"):
                want = (draft_size[1], draft_size[0]) if orientation in _SWAPS_AXES else draft_size
                image.draft("RGB", (max(1, int(want[0])), max(1, int(want[1]))))
            elif min_short_side > 0 and image.format in ("JPEG", "MPO"):
                box = _draft_box_for_short_side(full_width, full_height, orientation, crop_bottom, min_short_side)
                if box is not None:
                    image.draft("RGB", box)
            image.load()
            # A scaled draft shrinks the banner too; scale the crop with it.
            scale = image.size[1] / full_height if full_height else 1.0
            transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
            if transpose is not None:
                image = image.transpose(transpose)
                scale = image.size[1] / full_width if full_width else 1.0
            rgb = to_rgb(image)
        except ImageDecodeError:
            raise
        except Exception as exc:
            raise ImageDecodeError(path, _describe(exc, "corrupt image data")) from exc
    if crop_bottom > 0:
        rows = int(round(crop_bottom * scale))
        if rows >= rgb.height:
            raise ImageDecodeError(path, f"image is {rgb.height} px tall; cannot remove a {rows}-px bottom banner")
        rgb = rgb.crop((0, 0, rgb.width, rgb.height - rows))
    return rgb


def _draft_box_for_short_side(
    width: int, height: int, orientation: int, crop_bottom: int, min_short_side: int,
) -> tuple[int, int] | None:
    """The stored-orientation size to ask `Image.draft` for, or None when no DCT scale
    (1/2 at least) would keep `min_short_side` pixels on the shorter side."""
    shown_width, shown_height = (height, width) if orientation in _SWAPS_AXES else (width, height)
    short = min(shown_width, shown_height - max(0, crop_bottom))
    if short < 2 * min_short_side:
        return None
    factor = min_short_side / short
    # draft() keeps the result at least this big, so the cropped short side stays >= min_short_side.
    return max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode fgdesk meets to 8-bit RGB; alpha is composited on mid-grey."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        # Palette transparency is only honoured through an RGBA detour.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        image = Image.fromarray(_high_depth_to_uint8(image), mode="L")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, ALPHA_BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16-bit, 32-bit integer and float greyscale to 0..255 without clipping."""
    mode = image.mode
    values = np.asarray(image)
    if mode.startswith("I;16"):
        # round(v / 257) in integers: 65535 -> 255, 32896 -> 128, and no float copy of a big image.
        return ((values.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    values = values.astype(np.float32 if mode == "F" else np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0  # float images in [0, 1]
    elif low >= 0.0 and high <= 255.0:
        scaled = values  # 8-bit data stored wide
    elif mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0  # 16-bit data stored as 32-bit ints (older Pillow PNGs)
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _open_checked(path: Path) -> Image.Image:
    """Open the header and refuse what must not be decoded; the caller closes the image."""
    try:
        if path.is_dir():
            raise ImageDecodeError(path, "is a folder, not an image file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(path, "empty file (0 bytes)")
        image = Image.open(path, formats=_ALLOWED_FORMATS)
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageDecodeError(path, "permission denied") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception when warnings are turned into errors.
        raise ImageDecodeError(path, f"image too large (over {MAX_PIXELS:,} pixels)") from exc
    except Exception as exc:
        raise ImageDecodeError(path, _describe(exc, "unreadable image header")) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageDecodeError(path, f"invalid image size {width}x{height}")
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageDecodeError(path, f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")
    return image


def _orientation(image: Image.Image, allow_load: bool) -> int:
    """EXIF orientation 1..8 (1 when absent or unusable)."""
    if not allow_load and image.format == "PNG" and "exif" not in image.info:
        # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk.
        return 1
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _describe(exc: BaseException, fallback: str) -> str:
    """A short reason from a decoder exception; PIL messages are mostly readable."""
    if isinstance(exc, MemoryError):
        return "not enough memory to decode"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "truncated" in message.lower():
        return "truncated image data"
    if not message:
        return fallback
    if len(message) > 100:
        message = message[:97] + "..."
    return f"{fallback} ({message})"
