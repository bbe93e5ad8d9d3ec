"""Open user images safely and turn every kind of image into upright 8-bit RGB.

The reference pipeline does `Image.open(path).convert("RGB")`. That is kept, with three deliberate
departures a user would expect: EXIF orientation is applied (phone photos come out upright),
transparent pixels are composited on white (instead of whatever colour hides under alpha = 0), and
16-bit images are scaled to 8 bits (instead of clipping everything above 255 to white).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model_backend.errors import InputError

# A 12-tile image is 5376x2688 pixels at most; anything far above that only costs memory.
# 64 megapixels covers every phone and DSLR photo; Pillow's own bomb guard is left in place too.
DEFAULT_MAX_PIXELS = 64_000_000


def load_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Open an image file and return it as upright RGB, or raise InputError saying why not.

    With `max_side`, the image is scaled down to at most that many pixels on its long side, and
    a JPEG is decoded at a reduced scale to begin with (a 64 MP photo is never held in full).
    """
    path = Path(path)
    name = path.name
    try:
        if not path.is_file():
            raise InputError(f"The file {name} could not be found.")
        if path.stat().st_size == 0:
            raise InputError(f"The file {name} is empty (0 bytes).")
        with warnings.catch_warnings():
            # Pillow warns between 89 and 179 megapixels; the check below refuses those images
            # anyway (with their size in the message), before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(name, *image.size, max_pixels)
                if max_side is not None:
                    image.draft(image.mode, fitted_size(*image.size, max_side))
                image.load()
                image = to_rgb(image)
                if max_side is not None:
                    image.thumbnail((max_side, max_side))
                return image
    except InputError:
        raise
    except Image.DecompressionBombError as error:
        raise InputError(f"The image {name} is too large to open safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise InputError(f"The file {name} is not an image Pillow can read.") from error
    except (OSError, SyntaxError, ValueError) as error:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") and friends.
        raise InputError(f"The image {name} is damaged or truncated and cannot be read.") from error


def check_size(name: str, width: int, height: int, max_pixels: int, kind: str = "image") -> None:
    """Refuse an image (or a video's frames: `kind="video"`) of more than `max_pixels` pixels."""
    if width * height > max_pixels:
        raise InputError(
            f"The {kind} {name} is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,} pixels. Please resize it."
        )


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, so that neither side exceeds `max_side`."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB from any Pillow mode (CMYK, 16-bit, palette, alpha, grey, ...)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = _sixteen_bit_to_8bit(image)
    if image.mode == "P":
        # A palette may carry transparency: go through RGBA so it is composited below.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _sixteen_bit_to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit integer) grey to 8 bits by the range the format can hold."""
    pixels = np.asarray(image, dtype=np.float64)
    top = 65535.0 if pixels.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
    scaled = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
