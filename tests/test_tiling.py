"""Tests for model_backend.tiling: parity with InternVL 2.5's published dynamic preprocessing.

The reference (the model cards' `find_closest_aspect_ratio` / `dynamic_preprocess` /
`build_transform`) is re-implemented below in its own style: a set of candidate grids sorted by
tile count, a walk with the 0.5-area tie rule, PIL resize + row-major crops, then torchvision's
Resize / ToTensor / Normalize per tile. The code under test must agree with it grid for grid and
pixel for pixel (to float precision).

On the one place where the reference is not fully specified: its candidates come from a Python
set, so grids with the same tile count are visited in set-iteration order. That order can only
change the answer when two equal-product grids tie for the closest ratio; the tests below show
that this never happens with min_tiles=1 (the reference and the demo), and that with
min_tiles > 1 the demo answers as the reference would with equal products in (cols, rows) order.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms.functional import InterpolationMode

from model_backend.tiling import (
    TILE_SIZE,
    candidate_grids,
    choose_grid,
    count_tiles,
    image_to_pixel_values,
    tile_image,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_TOLERANCE = 0.05  # the agreed bound; observed differences are ~1e-6
FLOAT_TOLERANCE = 1e-4  # "to float precision": the module's own claim


# ---------------------------------------------------------------------------------------------
# The reference, in its own style


@functools.cache
def ref_target_ratios(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """The reference's candidate list: a set, sorted (stably) by tile count."""
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return tuple(sorted(target_ratios, key=lambda x: x[0] * x[1]))


def ref_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:  # noqa: SIM102 (the reference's own shape)
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def ref_grid(width, height, min_num=1, max_num=12, image_size=448, order=None):
    """The reference's grid; `order` re-sorts equal tile counts ("lex", "reverse") if given."""
    target_ratios = ref_target_ratios(min_num, max_num)
    if order == "lex":
        target_ratios = sorted(target_ratios, key=lambda x: (x[0] * x[1], x))
    elif order == "reverse":
        target_ratios = sorted(target_ratios, key=lambda x: (x[0] * x[1], -x[0], -x[1]))
    return ref_find_closest_aspect_ratio(width / height, target_ratios, width, height, image_size)


def ref_dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = ref_target_ratios(min_num, max_num)
    target_aspect_ratio = ref_find_closest_aspect_ratio(
        aspect_ratio, target_ratios, orig_width, orig_height, image_size
    )
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size,
        )
        processed_images.append(resized_img.crop(box))
    assert len(processed_images) == blocks
    if use_thumbnail and len(processed_images) != 1:
        processed_images.append(image.resize((image_size, image_size)))
    return processed_images


def ref_build_transform(input_size=448):
    return T.Compose(
        [
            T.Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
            T.Resize((input_size, input_size), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def ref_pixel_values(image, max_num=12):
    transform = ref_build_transform(448)
    images = ref_dynamic_preprocess(image, image_size=448, use_thumbnail=True, max_num=max_num)
    return torch.stack([transform(tile) for tile in images]).numpy()


# ---------------------------------------------------------------------------------------------
# Sizes to check


def random_sizes(count: int, seed: int = 20250101) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(1, 8000), rng.randint(1, 8000)) for _ in range(count)]


def exact_tie_sizes(min_num: int, max_num: int, image_size: int = 448) -> list[tuple[int, int]]:
    """Sizes whose W/H is exactly where two or more candidates tie for the closest ratio.

    A tie for the minimum can only sit on a candidate ratio shared by several grids ((2,1) and
    (4,2)) or halfway between two neighbouring ratios. For each, sizes just below and above the
    area threshold of every tied grid (the 0.5 * 448^2 * tiles rule), and a tiny one.
    """
    grids = ref_target_ratios(min_num, max_num)
    by_ratio: dict[Fraction, list[tuple[int, int]]] = {}
    for cols, rows in grids:
        by_ratio.setdefault(Fraction(cols, rows), []).append((cols, rows))
    ratios = sorted(by_ratio)
    ties = [(r, by_ratio[r]) for r in ratios if len(by_ratio[r]) > 1]
    ties += [((a + b) / 2, by_ratio[a] + by_ratio[b]) for a, b in itertools.pairwise(ratios)]
    sizes = []
    for ratio, tied in ties:
        num, den = ratio.numerator, ratio.denominator
        scales = {1}
        for cols, rows in tied:
            threshold = 0.5 * image_size * image_size * cols * rows
            s = math.sqrt(threshold / (num * den))
            scales |= {max(1, math.floor(s)), math.ceil(s), math.ceil(s) + 1}
        sizes += [(num * s, den * s) for s in sorted(scales)]
    return sizes


EXTREME_SIZES = [
    (1, 8000),
    (8000, 1),
    (3, 5000),
    (5000, 3),
    (1, 1),
    (2, 3),
    (3, 2),
    (1, 2),
    (8000, 8000),
    (448, 448),
    (896, 448),
    (448, 896),
    (633, 633),
    (634, 634),
    (950, 950),
    (951, 951),
    (1266, 633),
    (1268, 634),
    (65535, 1),
    (1, 65535),
]


# ---------------------------------------------------------------------------------------------
# Grid choice


@pytest.mark.parametrize("max_tiles", [1, 2, 6, 12, 24])
def test_candidates_are_the_reference_set(max_tiles):
    for min_tiles in range(1, max_tiles + 1):
        ours = candidate_grids(max_tiles, min_tiles)
        assert sorted(ours) == sorted(ref_target_ratios(min_tiles, max_tiles))
        products = [c * r for c, r in ours]
        assert products == sorted(products)  # fewest tiles first, like the reference


@pytest.mark.parametrize("max_tiles", [1, 6, 12, 24])
def test_choose_grid_matches_reference_on_random_sizes(max_tiles):
    sizes = random_sizes(600)
    mismatches = [
        (w, h, choose_grid(w, h, max_tiles), ref_grid(w, h, max_num=max_tiles))
        for w, h in sizes
        if choose_grid(w, h, max_tiles) != ref_grid(w, h, max_num=max_tiles)
    ]
    assert not mismatches, mismatches[:10]


@pytest.mark.parametrize("max_tiles", [1, 2, 4, 6, 12, 24])
def test_choose_grid_matches_reference_on_exact_ties_and_extremes(max_tiles):
    ties = exact_tie_sizes(1, max_tiles)
    assert ties or max_tiles == 1  # one candidate, nothing to tie with
    sizes = ties + EXTREME_SIZES
    mismatches = [
        (w, h, choose_grid(w, h, max_tiles), ref_grid(w, h, max_num=max_tiles))
        for w, h in sizes
        if choose_grid(w, h, max_tiles) != ref_grid(w, h, max_num=max_tiles)
    ]
    assert not mismatches, mismatches[:10]


@pytest.mark.parametrize("tile_size", [224, 336])
def test_choose_grid_threshold_follows_tile_size(tile_size):
    sizes = exact_tie_sizes(1, 12, tile_size) + random_sizes(100, seed=7)
    for w, h in sizes:
        assert choose_grid(w, h, 12, tile_size=tile_size) == ref_grid(w, h, image_size=tile_size)


def test_known_ties_by_hand():
    # A square: (1,1), (2,2) and (3,3) all have diff 0; a larger grid wins only past half its area.
    assert choose_grid(448, 448) == (1, 1)
    assert choose_grid(633, 633) == (1, 1)  # 400,689 <= 0.5 * 448^2 * 4 = 401,408
    assert choose_grid(634, 634) == (2, 2)  # 401,956 > 401,408
    assert choose_grid(950, 950) == (2, 2)  # 902,500 <= 0.5 * 448^2 * 9 = 903,168
    assert choose_grid(951, 951) == (3, 3)  # 904,401 > 903,168
    assert choose_grid(8000, 8000) == (3, 3)  # (4, 4) would be 16 > 12 tiles
    assert choose_grid(8000, 8000, 24) == (4, 4)
    # 2:1 against (2,1) and (4,2); (6,3) is 18 tiles.
    assert choose_grid(896, 448) == (2, 1)
    assert choose_grid(1266, 633) == (2, 1)  # 801,378 <= 802,816
    assert choose_grid(1268, 634) == (4, 2)  # 803,912 > 802,816
    # Tiny and extreme images.
    assert choose_grid(1, 1) == (1, 1)
    assert choose_grid(2, 3) == (2, 3)  # exact ratio beats everything, even for 6 pixels
    assert choose_grid(1, 8000) == (1, 12)
    assert choose_grid(8000, 1) == (12, 1)
    assert choose_grid(3, 5000) == (1, 12)
    assert choose_grid(5000, 3, 6) == (6, 1)
    assert choose_grid(8000, 1, 1) == (1, 1)


MIN_MAX = [(2, 6), (4, 4), (3, 12), (6, 6), (12, 12), (4, 12), (8, 24), (2, 2), (5, 5)]


@pytest.mark.parametrize(("min_tiles", "max_tiles"), MIN_MAX)
def test_choose_grid_with_min_tiles(min_tiles, max_tiles):
    """Parity with min_tiles > 1, where equal-product ties can make the reference order-bound.

    Ours must always equal the reference walked with equal products in (cols, rows) order; it
    must equal the reference's own set order wherever that order cannot matter.
    """
    sizes = random_sizes(150, seed=min_tiles * 100 + max_tiles)
    sizes += exact_tie_sizes(min_tiles, max_tiles) + EXTREME_SIZES
    order_bound = []
    for w, h in sizes:
        ours = choose_grid(w, h, max_tiles, min_tiles)
        assert min_tiles <= ours[0] * ours[1] <= max_tiles
        assert ours == ref_grid(w, h, min_tiles, max_tiles, order="lex"), (w, h)
        if ref_grid(w, h, min_tiles, max_tiles, order="reverse") != ours:
            order_bound.append((w, h))
        else:
            assert ours == ref_grid(w, h, min_tiles, max_tiles), (w, h)
    if min_tiles == max_tiles and max_tiles in (4, 6, 12):
        assert order_bound  # see test_equal_product_ties_are_order_bound_only_with_min_tiles


def test_no_equal_product_tie_can_decide_with_min_tiles_one():
    """With min_tiles=1 the reference's set order never matters (checked in exact arithmetic).

    Two grids with the same tile count can only tie at the midpoint of their ratios; for every
    budget up to 40 some other candidate is strictly closer there. The margin is far above float
    rounding, so the float walk cannot tie there either.
    """
    for max_tiles in range(1, 41):
        grids = ref_target_ratios(1, max_tiles)
        ratios = {g: Fraction(g[0], g[1]) for g in grids}
        for a, b in itertools.combinations(grids, 2):
            if a[0] * a[1] != b[0] * b[1]:
                continue
            middle = (ratios[a] + ratios[b]) / 2
            tie = abs(middle - ratios[a])
            best = min(abs(middle - r) for r in ratios.values())
            assert best < tie, (max_tiles, a, b)
            assert tie - best > Fraction(1, 10**6)  # nowhere near float precision


def test_equal_product_ties_are_order_bound_only_with_min_tiles():
    """W/H = 5/2 with exactly 4 tiles: (2,2) and (4,1) are both 1.5 away (exact in floats).

    The reference answers by the set's iteration order (a CPython detail); ours is documented:
    equal products in (cols, rows) order, so (2,2) comes first and (4,1) replaces it only past
    half of (4,1)'s area, 0.5 * 448^2 * 4 = 401,408 pixels.
    """
    for w, h in [(5, 2), (1120, 448)]:
        assert abs(w / h - 2 / 2) == abs(w / h - 4 / 1)
        lex = ref_grid(w, h, 4, 4, order="lex")
        reverse = ref_grid(w, h, 4, 4, order="reverse")
        assert lex != reverse  # the reference itself is order-dependent here
        assert choose_grid(w, h, 4, 4) == lex
    assert choose_grid(5, 2, 4, 4) == (2, 2)  # 10 pixels: the first of the tie stays
    assert choose_grid(1120, 448, 4, 4) == (4, 1)  # 501,760 > 401,408: the later one wins
    assert choose_grid(5, 8, 4, 4) == (1, 4)  # 5/8 sits between (1,4) and (2,2)
    assert choose_grid(560, 896, 4, 4) == (2, 2)
    # Same call, same answer: no dependence on hashing or on earlier calls.
    assert {choose_grid(1120, 448, 4, 4) for _ in range(5)} == {(4, 1)}


@pytest.mark.parametrize(
    ("width", "height", "max_tiles", "min_tiles"),
    [
        (0, 10, 12, 1),
        (10, 0, 12, 1),
        (-1, 10, 12, 1),
        (10, -5, 12, 1),
        (0, 0, 12, 1),
        (10, 10, 0, 1),
        (10, 10, -3, 1),
        (10, 10, 12, 0),
        (10, 10, 4, 5),
        (10, 10, 1, 2),
    ],
)
def test_bad_arguments_raise_value_error(width, height, max_tiles, min_tiles):
    with pytest.raises(ValueError):
        choose_grid(width, height, max_tiles, min_tiles)


def test_bad_sizes_raise_in_count_and_tile():
    with pytest.raises(ValueError):
        count_tiles(0, 100)
    with pytest.raises(ValueError):
        count_tiles(100, -1)
    with pytest.raises(ValueError):
        count_tiles(100, 100, max_tiles=0)
    with pytest.raises(ValueError):
        tile_image(Image.new("RGB", (0, 10)))
    with pytest.raises(ValueError):
        image_to_pixel_values(Image.new("RGB", (10, 10)), max_tiles=0)


# ---------------------------------------------------------------------------------------------
# Tiles and pixels


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("width", "height", "max_tiles"),
    [(1000, 700, 12), (300, 300, 12), (50, 900, 12), (1000, 700, 6), (2, 3, 12), (640, 480, 1)],
)
def test_tile_image_order_count_and_thumbnail(width, height, max_tiles):
    image = noise(width, height, seed=width + height)
    tiles = tile_image(image, max_tiles)
    cols, rows = choose_grid(width, height, max_tiles)
    resized = image.resize((cols * TILE_SIZE, rows * TILE_SIZE), Image.Resampling.BICUBIC)
    assert all(tile.size == (TILE_SIZE, TILE_SIZE) for tile in tiles)
    if cols * rows > 1:
        assert len(tiles) == cols * rows + 1
        assert same_pixels(tiles[-1], image.resize((TILE_SIZE, TILE_SIZE)))  # thumbnail last
    else:
        assert len(tiles) == 1
    for k in range(cols * rows):  # row-major: tile k at column k % cols, row k // cols
        x, y = (k % cols) * TILE_SIZE, (k // cols) * TILE_SIZE
        assert same_pixels(tiles[k], resized.crop((x, y, x + TILE_SIZE, y + TILE_SIZE))), k
    reference = ref_dynamic_preprocess(image, max_num=max_tiles, use_thumbnail=True)
    assert len(tiles) == len(reference)
    assert all(same_pixels(a, b) for a, b in zip(tiles, reference, strict=True))
    if cols * rows > 1:
        assert len(tile_image(image, max_tiles, use_thumbnail=False)) == cols * rows


def test_tiles_are_distinct_and_in_place():
    """A 2x2 grid of flat colours comes back as those colours, row by row."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    image = Image.new("RGB", (896, 896))
    for k, colour in enumerate(colours):
        image.paste(colour, ((k % 2) * 448, (k // 2) * 448, (k % 2 + 1) * 448, (k // 2 + 1) * 448))
    tiles = tile_image(image, 4)
    assert len(tiles) == 5
    for k, colour in enumerate(colours):
        assert tiles[k].getpixel((224, 224)) == colour


@pytest.mark.parametrize("use_thumbnail", [True, False])
@pytest.mark.parametrize("max_tiles", [1, 6, 12])
def test_count_tiles_matches_tile_image(max_tiles, use_thumbnail):
    for width, height in [(1, 1), (2, 3), (448, 448), (896, 448), (100, 2000), (1000, 700)]:
        image = Image.new("RGB", (width, height), (10, 20, 30))
        tiles = tile_image(image, max_tiles, use_thumbnail)
        assert count_tiles(width, height, max_tiles, use_thumbnail) == len(tiles)
        if use_thumbnail:
            reference = ref_dynamic_preprocess(image, max_num=max_tiles, use_thumbnail=True)
            assert len(tiles) == len(reference)


def test_count_tiles_on_many_sizes_without_images():
    for width, height in random_sizes(300, seed=3) + EXTREME_SIZES:
        for max_tiles in (1, 6, 12, 24):
            cols, rows = ref_grid(width, height, max_num=max_tiles)
            expected = cols * rows + (1 if cols * rows > 1 else 0)
            assert count_tiles(width, height, max_tiles) == expected
            assert count_tiles(width, height, max_tiles, use_thumbnail=False) == cols * rows


def assert_pixels_match(image: Image.Image, max_tiles: int) -> float:
    ours = image_to_pixel_values(image, max_tiles)
    reference = ref_pixel_values(image, max_num=max_tiles)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape
    assert ours.shape[1:] == (3, TILE_SIZE, TILE_SIZE)
    assert ours.shape[0] == count_tiles(image.width, image.height, max_tiles)
    difference = float(np.abs(ours - reference).max())
    assert difference <= PIXEL_TOLERANCE
    assert difference <= FLOAT_TOLERANCE
    return difference


@pytest.mark.parametrize("max_tiles", [1, 6, 12])
@pytest.mark.parametrize(("width", "height"), [(1000, 700), (300, 300), (50, 900), (2, 3)])
def test_pixel_values_match_reference_on_noise(width, height, max_tiles):
    assert_pixels_match(noise(width, height, seed=width * height), max_tiles)


def test_pixel_values_match_reference_on_a_big_photo_sized_image():
    image = noise(4032, 3024, seed=4032)
    assert choose_grid(4032, 3024) == (4, 3)
    assert assert_pixels_match(image, 12) <= FLOAT_TOLERANCE


@pytest.mark.parametrize("max_tiles", [1, 6, 12])
@pytest.mark.parametrize("name", ["astronaut.jpg", "coffee.jpg", "cat.jpg"])
def test_pixel_values_match_reference_on_example_photos(name, max_tiles):
    with Image.open(EXAMPLES / name) as opened:
        image = opened.convert("RGB")
    assert_pixels_match(image, max_tiles)


def test_pixel_values_without_thumbnail():
    image = noise(1000, 700, seed=1)
    ours = image_to_pixel_values(image, 6, use_thumbnail=False)
    transform = ref_build_transform(448)
    reference = ref_dynamic_preprocess(image, max_num=6, use_thumbnail=False)
    expected = torch.stack([transform(tile) for tile in reference]).numpy()
    assert ours.shape == expected.shape == (len(reference), 3, 448, 448)
    assert float(np.abs(ours - expected).max()) <= FLOAT_TOLERANCE
    assert ours.flags["C_CONTIGUOUS"]
