"""The thumbnailer meets random bytes and mangled images: a thumbnail or a short reason, never a crash."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fgdesk.gui.thumbnails import decode_thumbnail


def real_image_bytes(kind: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (96, 64), (200, 30, 40))
    image.save(buffer, format=kind)
    return buffer.getvalue()


SOURCES = {kind: real_image_bytes(kind) for kind in ("PNG", "JPEG", "BMP")}


def check_thumbnail(path) -> None:
    try:
        thumb = decode_thumbnail(path, 32)
    except ValueError as exc:  # the documented failure: a short reason for the problems list
        assert str(exc)
        return
    assert not thumb.isNull() and max(thumb.width(), thumb.height()) <= 32


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".bmp", ".webp", ".gif"]))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    check_thumbnail(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(SOURCES)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
)
def test_mangled_real_images(tmp_path, kind, cut, flips):
    data = bytearray(SOURCES[kind])
    data = data[: max(1, int(len(data) * cut))] if cut < 1.0 else data
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    path = tmp_path / f"mangled.{kind.lower()}"
    path.write_bytes(bytes(data))
    check_thumbnail(path)


def test_decompression_bomb_header_is_refused_without_allocating(tmp_path):
    # A valid PNG whose header claims 60,000 x 60,000 pixels.
    png = bytearray(SOURCES["PNG"])
    ihdr = png.index(b"IHDR")
    png[ihdr + 4: ihdr + 12] = struct.pack(">II", 60_000, 60_000)
    png[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr: ihdr + 17])) & 0xFFFFFFFF)
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(png))
    with pytest.raises(ValueError):
        decode_thumbnail(path, 32)


def test_zero_byte_and_text_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    for path in (empty, text):
        with pytest.raises(ValueError):
            decode_thumbnail(path, 32)
