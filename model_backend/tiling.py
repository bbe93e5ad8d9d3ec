"""InternVL's dynamic high-resolution tiling, and the tensor path that feeds the model.

The grid rule and the pixel pipeline follow the published InternVL 2.5 preprocessing exactly
(see ../shared/internvl-reference.md, section 2): pick the (cols, rows) grid whose aspect ratio is
closest to the image's, resize the whole image to that grid of 448-pixel tiles (bicubic), cut it
row by row, and append a 448x448 thumbnail of the whole image when there is more than one tile.

transformers' GotOcr2 image processor implements the same grid rule but resizes tensors rather
than PIL images, and takes one tile budget per call; the demo needs a budget per image (earlier
images get fewer tiles) and PIL's bicubic resize, so it does the tiling here. The pixels match the
reference pipeline (PIL resize, ToTensor, Normalize) to float precision.
"""

from __future__ import annotations

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


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, scaled to [0, 1] and ImageNet-normalised."""
    scale = np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0
    offset = np.asarray(IMAGENET_MEAN, dtype=np.float32) / np.asarray(IMAGENET_STD, np.float32)
    # (x / 255 - mean) / std == x / (255 * std) - mean / std: one multiply-add per pixel.
    out = pixels.astype(np.float32) / scale - offset
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def image_to_pixel_values(
    image: Image.Image,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
) -> np.ndarray:
    """Model-ready pixel values for one RGB image: float32 array (tiles, 3, tile, tile).

    Resizes once for the grid, normalises the whole resized image in one pass and cuts the
    tiles out of the array (cheaper than normalising tile by tile; the values are the same).
    """
    cols, rows = choose_grid(image.width, image.height, max_tiles, tile_size=tile_size)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    grid = normalize(np.asarray(resized))  # 3 x (rows*tile) x (cols*tile)
    tiles = grid.reshape(3, rows, tile_size, cols, tile_size).transpose(1, 3, 0, 2, 4)
    tiles = tiles.reshape(rows * cols, 3, tile_size, tile_size)
    if use_thumbnail and rows * cols > 1:
        thumbnail = image.resize((tile_size, tile_size), Image.Resampling.BICUBIC)
        tiles = np.concatenate([tiles, normalize(np.asarray(thumbnail))[None]], axis=0)
    return np.ascontiguousarray(tiles)
