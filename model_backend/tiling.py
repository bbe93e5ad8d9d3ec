"""InternVL's dynamic high-resolution tiling, and the tensor path that feeds the model.

The grid rule and the pixel pipeline follow the published InternVL 2.5 preprocessing exactly
(the model cards' `dynamic_preprocess`): pick the (cols, rows) grid whose aspect ratio is
closest to the image's, resize the whole image to that grid of 448-pixel tiles (bicubic), cut it
row by row, and append a 448x448 thumbnail of the whole image when there is more than one tile.

transformers' GotOcr2 image processor implements the same grid rule but resizes tensors rather
than PIL images, and takes one tile budget per call; the demo needs a budget per image (earlier
images get fewer tiles) and PIL's bicubic resize, so it does the tiling here. The pixels match the
reference pipeline (PIL resize, ToTensor, Normalize) to float precision.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

TILE_SIZE = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(max_tiles: int, min_tiles: int = 1) -> list[tuple[int, int]]:
    """Every (cols, rows) with min_tiles <= cols*rows <= max_tiles, fewest tiles first."""
    grids = {
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    }
    # Sorting by (tile count, cols, rows) fixes the order of equal products. With min_tiles=1
    # (the reference's and the demo's setting) that order never changes the result; with
    # min_tiles > 1 the reference's own result depends on Python's set order, and this one is
    # the deterministic (cols, rows) order (see tests/test_tiling.py).
    return sorted(grids, key=lambda grid: (grid[0] * grid[1], grid))


def choose_grid(
    width: int, height: int, max_tiles: int = 12, min_tiles: int = 1, tile_size: int = TILE_SIZE
) -> tuple[int, int]:
    """The (cols, rows) tile grid InternVL uses for an image of this size.

    The closest aspect ratio wins; on an exact tie a later (larger) grid wins only if the image
    has more than half the pixels of that grid.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max_tiles < 1 or min_tiles < 1 or min_tiles > max_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles}, {max_tiles}")
    aspect_ratio = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(max_tiles, min_tiles):
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def count_tiles(
    width: int,
    height: int,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
) -> int:
    """How many tiles (thumbnail included) an image of this size costs at this budget."""
    cols, rows = choose_grid(width, height, max_tiles, tile_size=tile_size)
    tiles = cols * rows
    return tiles + 1 if use_thumbnail and tiles > 1 else tiles


def tile_image(
    image: Image.Image,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
) -> list[Image.Image]:
    """Cut an RGB image into InternVL tiles: row-major, thumbnail last when there are several."""
    cols, rows = choose_grid(image.width, image.height, max_tiles, tile_size=tile_size)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles


# (x / 255 - mean) / std == x * scale - offset: one multiply and one subtract, in place.
_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD, np.float32))).reshape(1, 3, 1, 1)
_OFFSET = (np.asarray(IMAGENET_MEAN, np.float32) / np.asarray(IMAGENET_STD, np.float32)).reshape(
    1, 3, 1, 1
)
# The thumbnail is resized in this thread while the caller resizes the grid: Pillow releases the
# GIL while resampling, so the two run on two cores with exactly the same pixels.
_THUMBNAILS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnail")


def normalize(tiles: np.ndarray) -> np.ndarray:
    """uint8 (n, 3, H, W) -> float32 (n, 3, H, W) scaled to [0, 1] and ImageNet-normalised."""
    out = tiles.astype(np.float32)
    out *= _SCALE
    out -= _OFFSET
    return out


def image_to_pixel_values(
    image: Image.Image,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
) -> np.ndarray:
    """Model-ready pixel values for one RGB image: float32 array (tiles, 3, tile, tile).

    The same pixels as the reference (resize, crop, per-tile ToTensor/Normalize), computed with
    one resize of the grid, the thumbnail resized alongside it, and the tiles cut out of the
    uint8 array before a single vectorised normalisation.
    """
    cols, rows = choose_grid(image.width, image.height, max_tiles, tile_size=tile_size)
    with_thumbnail = use_thumbnail and rows * cols > 1
    size = (tile_size, tile_size)
    thumbnail = (
        _THUMBNAILS.submit(image.resize, size, Image.Resampling.BICUBIC) if with_thumbnail else None
    )
    grid = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = np.empty((rows * cols + with_thumbnail, 3, tile_size, tile_size), np.float32)
    # Channel by channel: each band is contiguous, so cutting it into tiles copies whole rows.
    for channel, band in enumerate(grid.split()):
        pixels = np.asarray(band).reshape(rows, tile_size, cols, tile_size)
        tiles[: rows * cols, channel] = pixels.transpose(0, 2, 1, 3).reshape(-1, *size)
    if thumbnail is not None:
        tiles[-1] = np.asarray(thumbnail.result()).transpose(2, 0, 1)
    tiles *= _SCALE
    tiles -= _OFFSET
    return tiles
