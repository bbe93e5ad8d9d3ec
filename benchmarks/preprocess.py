"""1. Image preprocessing: file -> model-ready tensor, this project against the reference.

The reference pipeline is written here as the InternVL model card has it: PIL open + convert,
`dynamic_preprocess` (resize, crop each tile, thumbnail), then per tile torchvision
Resize/ToTensor/Normalize and a stack. Both produce the same grid; the pixels are compared.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms.functional import InterpolationMode

from benchmarks.common import CACHE, median_seconds, table
from model_backend.images import load_image
from model_backend.media import PIXEL_CACHE, image_pixels
from model_backend.tiling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    choose_grid,
    image_to_pixel_values,
    normalize,
)

TILE = 448


def reference_tiles(image: Image.Image, max_num: int = 12) -> list[Image.Image]:
    cols, rows = choose_grid(image.width, image.height, max_num)  # same rule, tested separately
    resized = image.resize((TILE * cols, TILE * rows))
    tiles = []
    for i in range(cols * rows):
        box = ((i % cols) * TILE, (i // cols) * TILE, (i % cols + 1) * TILE, (i // cols + 1) * TILE)
        tiles.append(resized.crop(box))
    if len(tiles) != 1:
        tiles.append(image.resize((TILE, TILE)))
    return tiles


REFERENCE_TRANSFORM = T.Compose(
    [
        T.Resize((TILE, TILE), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
)


def reference_pipeline(path: str) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    return torch.stack([REFERENCE_TRANSFORM(tile) for tile in reference_tiles(image)])


def project_pipeline(path: str) -> np.ndarray:
    return image_to_pixel_values(load_image(path), 12)


def make_inputs() -> dict[str, str]:
    """A 4032x3024 JPEG (a phone photo's size) and a 1024x768 PNG, with photo-like content."""
    CACHE.mkdir(parents=True, exist_ok=True)
    from benchmarks.common import REPO

    source = Image.open(REPO / "examples" / "coffee.jpg").convert("RGB")
    noise = np.random.default_rng(0).integers(0, 24, (3024, 4032, 3), dtype=np.uint8)
    big = np.asarray(source.resize((4032, 3024), Image.Resampling.BICUBIC)) // 2 + noise * 4
    paths = {
        "4032x3024 JPEG": CACHE / "photo-4032x3024.jpg",
        "1024x768 PNG": CACHE / "1024x768.png",
    }
    if not paths["4032x3024 JPEG"].exists():
        Image.fromarray(big).save(paths["4032x3024 JPEG"], quality=92)
    if not paths["1024x768 PNG"].exists():
        source.resize((1024, 768), Image.Resampling.BICUBIC).save(paths["1024x768 PNG"])
    return {name: str(path) for name, path in paths.items()}


def stages(path: str, runs: int) -> dict[str, float]:
    """The project's time split: decode (+ upright RGB), resize + crop, normalise."""
    image = load_image(path)
    tiles = np.ascontiguousarray([np.asarray(t).transpose(2, 0, 1) for t in reference_tiles(image)])
    decode = median_seconds(lambda: load_image(path), runs)
    normalise = median_seconds(lambda: normalize(tiles), runs)
    whole = median_seconds(lambda: image_to_pixel_values(image, 12), runs)
    return {"decode": decode, "resize": whole - normalise, "normalise": normalise}


def reference_stages(path: str, runs: int) -> dict[str, float]:
    image = Image.open(path).convert("RGB")
    tiles = reference_tiles(image)
    return {
        "decode": median_seconds(lambda: Image.open(path).convert("RGB"), runs),
        "resize": median_seconds(lambda: reference_tiles(image), runs),
        "normalise": median_seconds(
            lambda: torch.stack([REFERENCE_TRANSFORM(t) for t in tiles]), runs
        ),
    }


def run(runs: int = 5) -> str:
    rows = [
        [
            "image",
            "grid",
            "reference s (decode/resize/normalise)",
            "project s (decode/resize/normalise)",
            "speed-up",
            "max |diff|",
            "cached later turn s",
        ]
    ]
    for name, path in make_inputs().items():
        reference = median_seconds(lambda p=path: reference_pipeline(p), runs)
        project = median_seconds(lambda p=path: project_pipeline(p), runs)
        difference = float(np.abs(reference_pipeline(path).numpy() - project_pipeline(path)).max())
        PIXEL_CACHE.clear()
        image_pixels(path, 12)  # the first turn fills the cache
        cached = median_seconds(lambda p=path: image_pixels(p, 12), runs)
        ref_stages, our_stages = reference_stages(path, runs), stages(path, runs)
        size = Image.open(path).size
        rows.append(
            [
                name,
                "x".join(map(str, choose_grid(*size, 12))),
                f"{reference:.3f} ({'/'.join(f'{v:.3f}' for v in ref_stages.values())})",
                f"{project:.3f} ({'/'.join(f'{v:.3f}' for v in our_stages.values())})",
                f"{reference / project:.2f}x",
                f"{difference:.1e}",
                f"{cached:.6f}",
            ]
        )
    return "### 1. Image preprocessing (12 tiles, CPU)\n\n" + table(rows)


if __name__ == "__main__":
    print(run())
