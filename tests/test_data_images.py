"""Safe decoding: every odd but valid image loads as RGB; every broken one raises ImageDecodeError."""
from __future__ import annotations

import io
import os
import pickle
import resource
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fgdesk.data import images
from fgdesk.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb, probe_image

RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def close_to(pixel, expected, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


def png_with_claimed_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR (with a correct CRC) claims another size."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def half_red_half_blue(width: int = 40, height: int = 20) -> Image.Image:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


# -- valid images in unusual modes ----------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "a.png")
    loaded = load_rgb(tmp_path / "a.png")
    assert loaded.mode == "RGB" and loaded.size == (10, 12)
    assert np.array_equal(np.asarray(loaded), pixels)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    loaded = load_rgb(tmp_path / "g.png")
    assert loaded.mode == "RGB" and loaded.getpixel((2, 2)) == (77, 77, 77)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_composited_on_mid_grey(tmp_path, mode):
    colour = (200, 10, 10, 0) if mode == "RGBA" else (200, 0)
    opaque = (10, 200, 10, 255) if mode == "RGBA" else (30, 255)
    image = Image.new(mode, (6, 6), colour)
    image.putpixel((0, 0), opaque)
    image.save(tmp_path / "alpha.png")
    loaded = load_rgb(tmp_path / "alpha.png")
    assert loaded.getpixel((3, 3)) == GREY
    assert loaded.getpixel((0, 0)) == ((10, 200, 10) if mode == "RGBA" else (30, 30, 30))


def test_palette_image_with_transparency_loads(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    image.paste(1, (0, 0, 4, 8))  # left half: index 1 (blue); right half: index 0 (transparent)
    image.info["transparency"] = 0
    image.save(tmp_path / "palette.png", transparency=0)
    loaded = load_rgb(tmp_path / "palette.png")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((1, 4)) == BLUE
    assert loaded.getpixel((6, 4)) == GREY


def test_palette_gif_loads(tmp_path):
    half_red_half_blue().convert("P").save(tmp_path / "anim.gif")
    loaded = load_rgb(tmp_path / "anim.gif")
    assert close_to(loaded.getpixel((2, 2)), RED) and close_to(loaded.getpixel((38, 2)), BLUE)


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    loaded = load_rgb(tmp_path / "cmyk.jpg")
    assert loaded.mode == "RGB"
    assert close_to(loaded.getpixel((8, 8)), RED, tolerance=20)


def test_16_bit_png_is_scaled_to_8_bit_not_clipped(tmp_path):
    values = np.array([[0, 257 * 10, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    loaded = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert loaded[0, :, 0].tolist() == [0, 10, 128, 255]
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_float_and_32_bit_tiffs_are_scaled(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    assert np.asarray(load_rgb(tmp_path / "f.tif"))[0, :, 1].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), mode="I").save(tmp_path / "i.tif")
    assert np.asarray(load_rgb(tmp_path / "i.tif"))[0, :, 1].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6: the stored picture must turn 90 degrees clockwise, so its left (red) half goes on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    half_red_half_blue(40, 20).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    assert probe_image(tmp_path / "phone.jpg") == (20, 40)
    loaded = load_rgb(tmp_path / "phone.jpg")
    assert loaded.size == (20, 40)
    assert close_to(loaded.getpixel((10, 5)), RED)
    assert close_to(loaded.getpixel((10, 35)), BLUE)


def test_crop_bottom_removes_banner_rows(tmp_path):
    image = Image.new("RGB", (30, 50), RED)
    image.paste(BLUE, (0, 40, 30, 50))  # a 10-row "banner"
    image.save(tmp_path / "banner.png")
    loaded = load_rgb(tmp_path / "banner.png", crop_bottom=10)
    assert loaded.size == (30, 40)
    assert {loaded.getpixel((x, y)) for x in range(30) for y in range(40)} == {RED}
    with pytest.raises(ImageDecodeError, match="banner"):
        load_rgb(tmp_path / "banner.png", crop_bottom=50)


def test_draft_size_decodes_jpeg_smaller_and_scales_the_crop(tmp_path):
    Image.new("RGB", (400, 300), RED).save(tmp_path / "big.jpg")
    full = load_rgb(tmp_path / "big.jpg", crop_bottom=20)
    assert full.size == (400, 280)
    small = load_rgb(tmp_path / "big.jpg", draft_size=(100, 75), crop_bottom=20)
    assert small.size == (100, 70)  # 1/4 scale: 20 banner rows become 5
    thumb = load_rgb(tmp_path / "big.jpg", draft_size=(90, 60))
    assert thumb.width >= 90 and thumb.height >= 60 and thumb.width < 400


def test_probe_reads_size_without_decoding(tmp_path):
    Image.new("RGB", (33, 21)).save(tmp_path / "x.webp")
    assert probe_image(tmp_path / "x.webp") == (33, 21)
    # A PNG cut right after its header still probes: the header is all probe reads.
    Image.new("RGB", (64, 48)).save(tmp_path / "y.png")
    data = (tmp_path / "y.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:60])
    assert probe_image(tmp_path / "cut.png") == (64, 48)


def test_unicode_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "Vögel und Bäume" / "鳥 images"
    folder.mkdir(parents=True)
    Image.new("RGB", (7, 5), RED).save(folder / "rotkehlchen é.jpg")
    assert load_rgb(folder / "rotkehlchen é.jpg").size == (7, 5)


def test_image_extensions_are_lower_case_suffixes():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)
    assert images.is_image_file("PHOTO.JPG") and not images.is_image_file("notes.txt")


# -- broken files -----------------------------------------------------------------------


def write_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    png = buffer.getvalue()
    files = {
        "corrupt_jpeg": (jpeg[:2] + bytes(range(256)) * 8, "corrupt.jpg"),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], "truncated.jpg"),
        "truncated_png": (png[: len(png) // 2], "truncated.png"),
        "text_named_jpg": (b"this is not an image\n" * 20, "notes.jpg"),
        "zero_bytes": (b"", "empty.png"),
    }
    paths = {}
    for key, (data, name) in files.items():
        (folder / name).write_bytes(data)
        paths[key] = folder / name
    return paths


@pytest.mark.parametrize(
    "kind, reason_words",
    [
        ("corrupt_jpeg", ("corrupt", "recognised", "truncated", "unreadable")),
        ("truncated_jpeg", ("truncated",)),
        ("truncated_png", ("truncated",)),
        ("text_named_jpg", ("not a recognised image format",)),
        ("zero_bytes", ("empty file",)),
    ],
)
def test_broken_files_raise_image_decode_error_with_a_short_reason(tmp_path, kind, reason_words):
    path = write_bad_files(tmp_path)[kind]
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    error = caught.value
    assert error.path == path and str(path) in str(error)
    assert any(word in error.reason for word in reason_words), error.reason
    assert len(error.reason) <= 120


def test_missing_file_and_folder_are_decode_errors(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="folder"):
        probe_image(tmp_path / "dir.jpg")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permissions do not bind root")
def test_unreadable_file_is_a_decode_error(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageDecodeError, match="permission denied"):
            load_rgb(path)
    finally:
        path.chmod(0o644)


def test_decode_error_survives_pickling():
    error = pickle.loads(pickle.dumps(ImageDecodeError("a/b.jpg", "truncated image data")))
    assert error.path == Path("a/b.jpg") and error.reason == "truncated image data"


# -- decompression bombs ------------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_with_claimed_size(50_000, 50_000))  # 2.5 gigapixels claimed, 70 bytes on disk
    assert bomb.stat().st_size < 200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for call in (probe_image, load_rgb):
        with pytest.raises(ImageDecodeError, match="too large"):
            call(bomb)
    assert time.perf_counter() - started < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 100_000  # decoding 2.5 Gpx would need gigabytes


def test_image_over_max_pixels_is_refused_even_below_pillows_hard_limit(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_with_claimed_size(11_000, 10_000))  # 110 Mpx: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError, match="11000x10000"):
            load_rgb(big)


def test_max_pixels_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "ok.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 9_999)
    with pytest.raises(ImageDecodeError, match="too large"):
        probe_image(tmp_path / "ok.png")


def test_pillow_bomb_warning_as_error_becomes_decode_error(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_with_claimed_size(11_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError, match="too large"):
            probe_image(big)


# -- fuzzing: nothing but ImageDecodeError ever escapes -------------------------------------


def _corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 8
    encoded = {}
    for name, save in {
        "png": lambda f: rgb.save(f, "PNG"),
        "jpg": lambda f: rgb.save(f, "JPEG", quality=80),
        "exif.jpg": lambda f: rgb.save(f, "JPEG", exif=exif.tobytes()),
        "cmyk.jpg": lambda f: rgb.convert("CMYK").save(f, "JPEG"),
        "gif": lambda f: rgb.convert("P").save(f, "GIF"),
        "bmp": lambda f: rgb.save(f, "BMP"),
        "tif": lambda f: rgb.save(f, "TIFF"),
        "webp": lambda f: rgb.save(f, "WEBP"),
        "palette.png": lambda f: rgb.convert("P").save(f, "PNG", transparency=3),
        "deep.png": lambda f: Image.fromarray(rng.integers(0, 65536, (9, 7), dtype=np.uint16)).save(f, "PNG"),
    }.items():
        buffer = io.BytesIO()
        save(buffer)
        encoded[name] = buffer.getvalue()
    return encoded


CORPUS = _corpus()
FUZZ_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Decoders warn about the damage they meet; the point here is what they raise.
quiet_decoders = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_only_decode_errors(path: Path) -> None:
    for call in (probe_image, load_rgb):
        try:
            result = call(path)
        except ImageDecodeError as error:
            assert error.reason and error.path == path
        else:
            if call is load_rgb:
                assert result.mode == "RGB" and result.width > 0 and result.height > 0


@quiet_decoders
@FUZZ_SETTINGS
@given(data=st.binary(max_size=512), extension=st.sampled_from(sorted(IMAGE_EXTENSIONS)))
def test_random_bytes_raise_only_decode_errors(fuzz_dir, data, extension):
    path = fuzz_dir / f"random{extension}"
    path.write_bytes(data)
    assert_only_decode_errors(path)


@quiet_decoders
@FUZZ_SETTINGS
@given(
    name=st.sampled_from(sorted(CORPUS)),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=6),
    header_bias=st.booleans(),
)
def test_mangled_real_images_raise_only_decode_errors(fuzz_dir, name, cut, flips, header_bias):
    data = bytearray(CORPUS[name])
    for position, value in flips:
        # Headers are where decoders trust the file most; aim half the examples there.
        position = position % (64 if header_bias else len(data))
        data[position % len(data)] = value
    data = data[: max(1, int(len(data) * cut))] if cut < 0.98 else data
    path = fuzz_dir / f"mangled.{name}"
    path.write_bytes(bytes(data))
    assert_only_decode_errors(path)


def _camera_photo(path: Path, size=(1600, 1200), exif_orientation: int | None = None) -> None:
    """A smooth gradient with some texture: JPEG's DCT scaling is judged on real structure."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 255, y / height * 255, 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)], axis=-1)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if exif_orientation is None:
        image.save(path, quality=92)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, quality=92, exif=exif)


def test_min_short_side_decodes_big_jpegs_reduced_but_never_below_it(tmp_path):
    _camera_photo(tmp_path / "photo.jpg")
    assert load_rgb(tmp_path / "photo.jpg").size == (1600, 1200)
    # 1/4 scale (300 px) is the smallest that keeps 250 px; 1/8 (150 px) would not.
    assert load_rgb(tmp_path / "photo.jpg", min_short_side=250).size == (400, 300)
    assert load_rgb(tmp_path / "photo.jpg", min_short_side=100).size == (200, 150)
    # No scale of 1/2 or less keeps 700 px: the file decodes in full.
    assert load_rgb(tmp_path / "photo.jpg", min_short_side=700).size == (1600, 1200)
    # The banner comes off the reduced image in proportion and the rest still keeps 250 px.
    assert load_rgb(tmp_path / "photo.jpg", crop_bottom=200, min_short_side=250).size == (400, 250)
    # With a taller banner 1/4 would leave 200 rows, so 1/2 it is: 600 - 200 rows.
    assert load_rgb(tmp_path / "photo.jpg", crop_bottom=400, min_short_side=250).size == (800, 400)
    # PNG has no reduced decode; the argument changes nothing.
    Image.open(tmp_path / "photo.jpg").save(tmp_path / "photo.png")
    assert load_rgb(tmp_path / "photo.png", min_short_side=100).size == (1600, 1200)


def test_min_short_side_follows_exif_orientation(tmp_path):
    _camera_photo(tmp_path / "portrait.jpg", size=(1600, 1200), exif_orientation=6)  # shown as 1200 x 1600
    image = load_rgb(tmp_path / "portrait.jpg", min_short_side=250)
    assert image.size == (300, 400)
    # The banner is the bottom of the displayed (rotated) image: 400 shown rows, 100 removed.
    assert load_rgb(tmp_path / "portrait.jpg", crop_bottom=400, min_short_side=250).size == (300, 300)


def test_reduced_decoding_keeps_the_pixels_the_evaluation_transform_makes(tmp_path):
    from fgdesk.data.augment import eval_min_short_side, eval_transform

    _camera_photo(tmp_path / "photo.jpg")
    transform = eval_transform(96)
    full = transform(load_rgb(tmp_path / "photo.jpg"))
    reduced_image = load_rgb(tmp_path / "photo.jpg", min_short_side=eval_min_short_side(96))
    assert reduced_image.width < 1600  # the reduced path was taken
    reduced = transform(reduced_image)
    assert full.shape == reduced.shape
    # In normalised units (1.0 is about 57 grey levels): well under one grey level on average.
    assert (full - reduced).abs().mean() < 0.015
