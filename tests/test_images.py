"""Tests for model_backend.images: every kind of image file becomes upright 8-bit RGB, and every
bad file becomes an InputError whose message says what is wrong.

All files are written into tmp_path with Pillow; the oversized ones only *declare* a huge size
(a patched PNG header), so no test allocates more than a few kilobytes of pixels.
"""

from __future__ import annotations

import gc
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from model_backend.errors import InputError
from model_backend.images import DEFAULT_MAX_PIXELS, load_image, to_rgb

WHITE = (255, 255, 255)


def noise(width: int, height: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def close_to(actual, expected, tolerance: int) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to claim width x height (CRC recomputed)."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (1, 2, 3)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# Plain files


def test_rgb_png_comes_back_unchanged(tmp_path):
    pixels = noise(37, 23)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels, "RGB").save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (37, 23)
    assert np.array_equal(np.asarray(image), pixels)


def test_rgb_jpeg_matches_plain_decode(tmp_path):
    path = tmp_path / "noise.jpg"
    Image.fromarray(noise(64, 48), "RGB").save(path, quality=90)
    image = load_image(str(path))  # a str path works too
    with Image.open(path) as raw:
        expected = np.asarray(raw.convert("RGB"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), expected)


def test_image_is_fully_loaded(tmp_path):
    path = tmp_path / "loaded.png"
    Image.fromarray(noise(8, 8), "RGB").save(path)
    image = load_image(path)
    path.unlink()
    assert np.asarray(image).shape == (8, 8, 3)


def test_greyscale_becomes_grey_rgb(tmp_path):
    grey = noise(20, 10, channels=1)[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (10, 20, 3)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], grey)


# ---------------------------------------------------------------------------------------------
# Colour modes


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 255, 0, 0), (255, 0, 255)),  # magenta
        ((0, 0, 255, 0), (255, 255, 0)),  # yellow
        ((0, 0, 0, 255), (0, 0, 0)),  # black
        ((0, 0, 0, 0), (255, 255, 255)),  # paper
    ],
)
def test_cmyk_jpeg(tmp_path, cmyk, rgb):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), cmyk).save(path, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((16, 16)), rgb, 8), image.getpixel((16, 16))


def test_sixteen_bit_grey_png_keeps_its_gradient(tmp_path):
    ramp = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535
    values = np.stack([ramp, np.full(256, 32768, np.uint16), np.full(256, 1000, np.uint16)])
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # Pillow opens it as 16-bit ("I;16"), not 8-bit
        assert np.array_equal(np.asarray(raw), values)
    image = load_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[0, :, 0] - np.arange(256)).max() <= 1  # the ramp, not clipped white
    assert abs(pixels[1, 0, 0] - 128) <= 1  # 32768 -> about 128
    assert abs(pixels[2, 0, 0] - 4) <= 1  # 1000 -> about 4 (plain convert would clip to 255)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_sixteen_bit_dark_png_stays_dark(tmp_path):
    """A 16-bit file whose values all sit below 256 is still 16-bit: 200/65535 is near black."""
    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((4, 4), 200, np.uint16)).save(path)
    assert load_image(path).getpixel((0, 0)) == (1, 1, 1)


def palette_image() -> Image.Image:
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (256 * 3 - 12))
    image.putdata([0, 1, 2, 3, 3, 2, 1, 0])
    return image


def test_palette_png(tmp_path):
    path = tmp_path / "palette.png"
    palette_image().save(path)
    with Image.open(path) as raw:
        assert raw.mode == "P"
    image = load_image(path)
    assert image.mode == "RGB"
    assert list(image.getdata()) == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (10, 20, 30),
        (10, 20, 30),
        (0, 0, 255),
        (0, 255, 0),
        (255, 0, 0),
    ]


def test_palette_png_with_transparent_colour(tmp_path):
    path = tmp_path / "palette-alpha.png"
    palette_image().save(path, transparency=1)  # green is transparent
    with Image.open(path) as raw:
        assert raw.mode == "P"
        assert raw.info.get("transparency") is not None
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((1, 0)) == WHITE  # transparent green -> white
    assert image.getpixel((2, 1)) == WHITE
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((3, 0)) == (10, 20, 30)


def test_rgba_png_transparent_pixels_come_out_white(tmp_path):
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[0, 0] = (0, 0, 0, 0)  # transparent black
    pixels[0, 1] = (200, 10, 10, 0)  # transparent red: the hidden colour must not show
    pixels[0, 2] = (10, 200, 10, 255)  # opaque green
    pixels[1, 0] = (0, 0, 0, 128)  # half-transparent black over white: mid grey
    pixels[1, 1] = (0, 0, 255, 255)
    pixels[1, 2] = (255, 255, 255, 0)
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == WHITE
    assert image.getpixel((2, 0)) == (10, 200, 10)
    assert close_to(image.getpixel((0, 1)), (127, 127, 127), 2)
    assert image.getpixel((1, 1)) == (0, 0, 255)
    assert image.getpixel((2, 1)) == WHITE


def test_la_png(tmp_path):
    pixels = np.array([[[0, 0], [100, 255]], [[50, 128], [255, 0]]], np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(pixels, "LA").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "LA"
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == (100, 100, 100)
    assert close_to(image.getpixel((0, 1)), (152, 152, 152), 2)  # 50 at alpha 128 over white
    assert image.getpixel((1, 1)) == WHITE


def test_rgb_png_with_transparent_colour(tmp_path):
    image = Image.new("RGB", (2, 1), (50, 60, 70))
    image.putpixel((0, 0), (1, 2, 3))
    path = tmp_path / "rgb-trns.png"
    image.save(path, transparency=(1, 2, 3))
    loaded = load_image(path)
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == (50, 60, 70)


def test_grey_png_with_transparent_value_comes_out_white(tmp_path):
    image = Image.new("L", (2, 1), 50)
    image.putpixel((0, 0), 10)
    path = tmp_path / "grey-trns.png"
    image.save(path, transparency=10)
    with Image.open(path) as raw:
        assert raw.mode == "L"
        assert raw.info.get("transparency") == 10
    loaded = load_image(path)
    assert loaded.getpixel((1, 0)) == (50, 50, 50)
    assert loaded.getpixel((0, 0)) == WHITE  # today: (10, 10, 10)


def test_to_rgb_in_memory():
    assert to_rgb(Image.new("RGBA", (2, 2), (9, 9, 9, 0))).getpixel((0, 0)) == WHITE
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == WHITE
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(rgb).mode == "RGB"
    assert to_rgb(rgb).getpixel((1, 1)) == (1, 2, 3)


# ---------------------------------------------------------------------------------------------
# EXIF orientation


def expected_upright(raw: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels `raw` (rows x cols) under an EXIF orientation.

    From the EXIF definitions of where the stored row 0 / column 0 go: 6 = row 0 on the right,
    column 0 on top (rotate 90 degrees clockwise); 8 = row 0 on the left, column 0 at the
    bottom (90 degrees counter-clockwise); 5 and 7 are the two diagonal mirrors.
    """
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }[orientation](raw)


def save_with_orientation(image: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize(("orientation", "red_side"), [(6, "top"), (8, "bottom")])
def test_exif_rotated_jpeg_red_on_the_left(tmp_path, orientation, red_side):
    raw = Image.new("RGB", (40, 20), (0, 0, 255))
    raw.paste((255, 0, 0), (0, 0, 20, 20))  # stored pixels: red on the left, blue on the right
    path = tmp_path / f"rotated{orientation}.jpg"
    save_with_orientation(raw, path, orientation)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 40)  # width and height swapped
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 34))
    red, blue = (255, 0, 0), (0, 0, 255)
    if red_side == "top":
        assert close_to(top, red, 10) and close_to(bottom, blue, 10), (top, bottom)
    else:
        assert close_to(top, blue, 10) and close_to(bottom, red, 10), (top, bottom)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_exactly(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    save_with_orientation(Image.fromarray(noise(24, 16, seed=orientation)), path, orientation)
    with Image.open(path) as opened:
        assert opened.getexif().get(0x0112) == orientation
        stored = np.asarray(opened.convert("RGB"))  # the decoded pixels, not rotated
    image = load_image(path)
    assert np.array_equal(np.asarray(image), expected_upright(stored, orientation))


# ---------------------------------------------------------------------------------------------
# Errors


def raises_input_error(path, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        load_image(path, **kwargs)
    assert isinstance(caught.value, ValueError)  # InputError is a ValueError
    return str(caught.value)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image, just some text\n" * 20)
    message = raises_input_error(path)
    assert "notes.png" in message
    assert "not an image" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    message = raises_input_error(path)
    assert "empty.jpg" in message
    assert "empty" in message.replace("empty.jpg", "")
    assert "0 bytes" in message


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_truncated_file(tmp_path, suffix):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # nothing may switch Pillow's guard off globally
    whole = tmp_path / f"whole.{suffix}"
    Image.fromarray(noise(128, 96, seed=5)).save(whole)
    data = whole.read_bytes()
    path = tmp_path / f"half.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    message = raises_input_error(path)
    assert f"half.{suffix}" in message
    assert "truncated" in message or "damaged" in message


def test_over_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)  # 1,200 pixels
    message = raises_input_error(path, max_pixels=1000)
    assert "big.png" in message
    assert "40x30 = 1,200 pixels" in message
    assert "1,000 pixels" in message
    assert "limit" in message
    assert "resize" in message.lower()
    assert load_image(path, max_pixels=1200).size == (40, 30)  # the limit itself is allowed


def test_over_default_max_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_declaring(9000, 9000))  # 81 MP: above 64 MP, below Pillow's guard
    assert DEFAULT_MAX_PIXELS < 9000 * 9000 < Image.MAX_IMAGE_PIXELS
    message = raises_input_error(path)
    assert "9000x9000 = 81,000,000 pixels" in message
    assert "limit is 64,000,000 pixels" in message


def test_over_max_pixels_message_shows_different_numbers(tmp_path):
    path = tmp_path / "just-over.png"
    path.write_bytes(png_declaring(8000, 8050))  # 64.4 MP
    message = raises_input_error(path)
    assert "64,400,000 pixels; the limit is 64,000,000 pixels" in message


def test_decompression_bomb_header(tmp_path):
    """A PNG declaring 100000x100000 (10 gigapixels) is refused from its header alone."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    assert path.stat().st_size < 200
    message = raises_input_error(path)
    assert "bomb.png" in message
    assert "too large" in message or "megapixels" in message
    # Even with our own limit lifted, Pillow's bomb guard still turns it into an InputError.
    message = raises_input_error(path, max_pixels=10**12)
    assert "too large" in message


def test_pillow_bomb_guard_becomes_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "guarded.png"
    Image.new("RGB", (80, 80)).save(path)  # over twice Pillow's limit: Pillow refuses to open it
    message = raises_input_error(path, max_pixels=10**9)
    assert "guarded.png" in message
    assert "too large" in message


def test_our_limit_not_pillows_warning_decides_in_the_warning_band(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "warned.png"
    Image.new("RGB", (40, 40)).save(path)  # 1,600 pixels: Pillow only warns
    message = raises_input_error(path, max_pixels=1500)
    assert "40x40 = 1,600 pixels; the limit is 1,500 pixels" in message
    assert load_image(path, max_pixels=2000).size == (40, 40)


def test_missing_file_is_an_input_error(tmp_path):
    raises_input_error(tmp_path / "missing.png")


def test_missing_file_message_does_not_blame_the_data(tmp_path):
    message = raises_input_error(tmp_path / "missing.png")
    assert "damaged" not in message and "truncated" not in message


def test_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_image(path)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((4, 4)), (255, 0, 0), 4)


def write_case(tmp_path: Path, case: str) -> tuple[Path, dict]:
    if case == "over max_pixels":
        path = tmp_path / "big.png"
        Image.new("RGB", (40, 30)).save(path)
        return path, {"max_pixels": 1000}
    if case == "truncated":
        path = tmp_path / "half.png"
        Image.fromarray(noise(128, 96, seed=5)).save(path)
        path.write_bytes(path.read_bytes()[:2000])
        return path, {}
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path, {}


@pytest.mark.parametrize("case", ["over max_pixels", "truncated", "animated gif"])
def test_load_image_closes_the_file(tmp_path, case):
    path, kwargs = write_case(tmp_path, case)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            image = load_image(path, **kwargs)
            del image
        except InputError:
            pass
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
