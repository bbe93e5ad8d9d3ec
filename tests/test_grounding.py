"""Tests for model_backend.grounding: parsing InternVL 2.5 boxes and drawing them."""

from __future__ import annotations

import pytest
from PIL import Image

from model_backend.grounding import (
    PALETTE,
    Box,
    draw_boxes,
    grounding_spans,
    label_colors,
    line_width,
    parse_boxes,
    scale_boxes,
)

SIZES = [(640, 480), (300, 1000)]
WHITE = (255, 255, 255)

# (reply, expected boxes as (label, x1, y1, x2, y2) on the model's 0..1000 grid)
CASES: list[tuple[str, str, list[tuple[str, float, float, float, float]]]] = [
    # --- well-formed replies -------------------------------------------------
    ("single", "<ref>cat</ref><box>[[100, 200, 300, 400]]</box>", [("cat", 100, 200, 300, 400)]),
    (
        "surrounding text",
        "Sure! The <ref>cat</ref><box>[[100, 200, 300, 400]]</box> sits on the mat.",
        [("cat", 100, 200, 300, 400)],
    ),
    (
        "two boxes one ref",
        "<ref>dogs</ref><box>[[10, 20, 30, 40], [500, 600, 700, 800]]</box>",
        [("dogs", 10, 20, 30, 40), ("dogs", 500, 600, 700, 800)],
    ),
    (
        "three boxes one ref",
        "<ref>cups</ref><box>[[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]</box>",
        [("cups", 0, 0, 1, 1), ("cups", 2, 2, 3, 3), ("cups", 4, 4, 5, 5)],
    ),
    (
        "two refs",
        "A <ref>cat</ref><box>[[1, 2, 3, 4]]</box> and a <ref>dog</ref><box>[[5, 6, 7, 8]]</box>.",
        [("cat", 1, 2, 3, 4), ("dog", 5, 6, 7, 8)],
    ),
    ("box without ref", "Here: <box>[[100, 200, 300, 400]]</box>", [("", 100, 200, 300, 400)]),
    (
        "ref box then lone box",
        "<ref>a</ref><box>[[1, 2, 3, 4]]</box> <box>[[5, 6, 7, 8]]</box>",
        [("a", 1, 2, 3, 4), ("", 5, 6, 7, 8)],
    ),
    (
        "text between ref and box",
        "<ref>cat</ref> is here: <box>[[1, 2, 3, 4]]</box>",
        [("", 1, 2, 3, 4)],
    ),
    (
        "whitespace between ref and box",
        "<ref>cat</ref> \n\t <box>[[1, 2, 3, 4]]</box>",
        [("cat", 1, 2, 3, 4)],
    ),
    (
        "label stripped",
        "<ref>  red car \n</ref><box>[[1, 2, 3, 4]]</box>",
        [("red car", 1, 2, 3, 4)],
    ),
    ("non-ascii label", "<ref>猫</ref><box>[[1, 2, 3, 4]]</box>", [("猫", 1, 2, 3, 4)]),
    (
        "exact format two boxes",
        "<ref>person</ref><box>[[123, 45, 678, 901], [0, 0, 1000, 1000]]</box>",
        [("person", 123, 45, 678, 901), ("person", 0, 0, 1000, 1000)],
    ),
    # --- nested or broken tags ---------------------------------------------
    ("ref inside ref", "<ref><ref>a</ref><box>[[1, 2, 3, 4]]</box>", [("a", 1, 2, 3, 4)]),
    (
        "close box without open",
        "</box><ref>a</ref><box>[[1, 2, 3, 4]]</box></box>",
        [("a", 1, 2, 3, 4)],
    ),
    ("box never closed", "<ref>a</ref><box>[[1, 2, 3, 4]]", []),
    (
        "box reopened before close",
        "<box>[[1, 2, 3, 4]]<box>[[5, 6, 7, 8]]</box>",
        [("", 5, 6, 7, 8)],
    ),
    ("box inside ref", "<ref>a<box>[[1, 2, 3, 4]]</box></ref>", [("", 1, 2, 3, 4)]),
    ("ref never closed", "<ref>a <box>[[1, 2, 3, 4]]</box>", [("", 1, 2, 3, 4)]),
    ("upper-case tags are text", "<REF>a</REF><BOX>[[1, 2, 3, 4]]</BOX>", []),
    ("empty box", "<ref>a</ref><box></box>", []),
    ("empty list", "<box>[]</box><box>[[]]</box>", []),
    ("no tags", "There is no cat in [[1, 2, 3, 4]].", []),
    ("empty text", "", []),
    # --- coordinates out of range / reversed ---------------------------------
    ("out of range", "<box>[[-5, -0.5, 1200, 1000.5]]</box>", [("", 0, 0, 1000, 1000)]),
    ("reversed", "<box>[[300, 400, 100, 200]]</box>", [("", 100, 200, 300, 400)]),
    ("reversed x only", "<box>[[300, 200, 100, 400]]</box>", [("", 100, 200, 300, 400)]),
    ("reversed and clamped", "<box>[[1500, 900, -20, 100]]</box>", [("", 0, 100, 1000, 900)]),
    ("zero-size box kept", "<box>[[500, 500, 500, 500]]</box>", [("", 500, 500, 500, 500)]),
    # --- junk inside a box ---------------------------------------------------
    ("letters", "<box>[[a, b, c, d]]</box>", []),
    ("three numbers", "<box>[[1, 2, 3]]</box>", []),
    ("five numbers", "<box>[[1, 2, 3, 4, 5]]</box>", []),
    ("missing commas", "<box>[[1 2 3 4]]</box>", []),
    ("empty item", "<box>[[1, , 3, 4]]</box>", []),
    ("nested pairs", "<box>[[[1, 2], [3, 4]]]</box>", []),
    ("deeper list of four", "<box>[[[1, 2, 3, 4]]]</box>", [("", 1, 2, 3, 4)]),
    (
        "junk between valid quadruples",
        "<ref>x</ref><box>[[1, 2, 3, 4], [a, b, c, d], [1, 2, 3], [5, 6, 7, 8]]</box>",
        [("x", 1, 2, 3, 4), ("x", 5, 6, 7, 8)],
    ),
    ("exponent", "<box>[[1e3, 2, 3, 4]]</box>", []),
    ("nan inf", "<box>[[nan, 2, 3, 4], [1, inf, 3, 4]]</box>", []),
    ("hex and underscores", "<box>[[0x10, 2, 3, 4], [1_000, 2, 3, 4]]</box>", []),
    (
        "python code is not evaluated",
        "<box>[[__import__('os').system('touch /tmp/pwned'), 1, 2, 3]]</box>"
        "<box>__import__('os')</box>",
        [],
    ),
    # --- number formats and whitespace --------------------------------------
    (
        "floats",
        "<box>[[100.5, 200.25, 300.0, 400.75]]</box>",
        [("", 100.5, 200.25, 300.0, 400.75)],
    ),
    ("leading dot and sign", "<box>[[.5, +10, 20., 30]]</box>", [("", 0.5, 10, 20, 30)]),
    (
        "spaces and newlines",
        "<ref>a</ref>\n<box>[ [ 100 ,200,\n 300 ,\t400 ] ,\n [1,2,3,4] ]</box>",
        [("a", 100, 200, 300, 400), ("a", 1, 2, 3, 4)],
    ),
    (
        "no spaces",
        "<ref>a</ref><box>[[1,2,3,4],[5,6,7,8]]</box>",
        [("a", 1, 2, 3, 4), ("a", 5, 6, 7, 8)],
    ),
    # --- partial (streaming) replies ----------------------------------------
    (
        "cut inside coordinates",
        "<ref>a</ref><box>[[1, 2, 3, 4]]</box> and <ref>b</ref><box>[[10, 20, 3",
        [("a", 1, 2, 3, 4)],
    ),
    (
        "cut inside closing tag",
        "<ref>a</ref><box>[[1, 2, 3, 4]]</box><box>[[5, 6, 7, 8]]</bo",
        [("a", 1, 2, 3, 4)],
    ),
    ("cut inside ref", "<ref>a</ref><box>[[1, 2, 3, 4]]</box><ref>b", [("a", 1, 2, 3, 4)]),
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(("reply", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_boxes_table(reply: str, expected: list, size: tuple[int, int]) -> None:
    width, height = size
    got = parse_boxes(reply, width, height)
    want = [
        Box(label, x1 * width / 1000, y1 * height / 1000, x2 * width / 1000, y2 * height / 1000)
        for label, x1, y1, x2, y2 in expected
    ]
    assert [b.label for b in got] == [b.label for b in want]
    for g, w in zip(got, want, strict=True):
        assert (g.x1, g.y1, g.x2, g.y2) == pytest.approx((w.x1, w.y1, w.x2, w.y2))


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (64.0, 96.0, 192.0, 192.0)),
        ((300, 1000), (30.0, 200.0, 90.0, 400.0)),
        ((1000, 1000), (100.0, 200.0, 300.0, 400.0)),
    ],
)
def test_pixel_values_by_hand(size: tuple[int, int], expected: tuple) -> None:
    # Worked by hand, so the scaling formula is not only checked against itself.
    (box,) = parse_boxes("<ref>cat</ref><box>[[100, 200, 300, 400]]</box>", *size)
    assert box == Box("cat", *expected)


def test_box_is_frozen() -> None:
    box = Box("a", 1, 2, 3, 4)
    with pytest.raises(AttributeError):
        box.x1 = 5  # type: ignore[misc]


STREAMED = (
    "I found them. <ref>cat</ref><box>[[100, 200, 300, 400], [500, 500, 600, 650]]</box> "
    "and the <ref>dog</ref>\n<box>[[0, 0, 1000, 1000]]</box>, plus "
    "<box>[[10.5, 20, 30, 40]]</box>. Done."
)


def _closed_box_count(prefix: str) -> int:
    """Boxes a well-formed prefix should yield: those of every `</box>` already closed.

    Written without the parser: STREAMED's `<box>` bodies hold 2, 1 and 1 boxes in order.
    """
    per_tag = [2, 1, 1]
    return sum(per_tag[: prefix.count("</box>")])


def test_every_streaming_prefix() -> None:
    full = parse_boxes(STREAMED, 640, 480)
    assert len(full) == 4
    previous = 0
    for cut in range(len(STREAMED) + 1):
        prefix = STREAMED[:cut]
        got = parse_boxes(prefix, 640, 480)
        assert len(got) == _closed_box_count(prefix), repr(prefix)
        assert len(got) >= previous, repr(prefix)
        # What has been shown never changes as more text arrives.
        assert got == full[: len(got)], repr(prefix)
        previous = len(got)


def test_streaming_prefix_after_ref_gives_lone_ref_span() -> None:
    prefix = "<ref>cat</ref><box>[[100, 200, 3"
    (span,) = grounding_spans(prefix)
    assert (span.start, span.end, span.label, span.boxes) == (0, 14, "cat", [])


def test_spans_offsets_and_contents() -> None:
    text = "A <ref> cat </ref> <box>[[1, 2, 3, 4]]</box>, <box>[[5,6,7,8]]</box> <ref>x</ref>."
    spans = grounding_spans(text)
    assert [text[s.start : s.end] for s in spans] == [
        "<ref> cat </ref> <box>[[1, 2, 3, 4]]</box>",
        "<box>[[5,6,7,8]]</box>",
        "<ref>x</ref>",
    ]
    assert [s.label for s in spans] == ["cat", "", "x"]
    assert [s.boxes for s in spans] == [[(1, 2, 3, 4)], [(5, 6, 7, 8)], []]


def test_span_boxes_are_normalised() -> None:
    (span,) = grounding_spans("<ref>a</ref><box>[[1200, -5, 100, 50], [bad]]</box>")
    assert span.boxes == [(100.0, 0.0, 1000.0, 50.0)]


def test_span_with_only_junk_has_no_boxes() -> None:
    (span,) = grounding_spans("<ref>a</ref><box>[[a, b, c, d]]</box>")
    assert span.label == "a"
    assert span.boxes == []
    assert parse_boxes("<ref>a</ref><box>[[a, b, c, d]]</box>", 100, 100) == []


def test_long_untagged_text_is_fast() -> None:
    # Many unmatched opening tags must not make the regex blow up.
    text = "<ref>" * 20_000 + "<box>[[1, 2, 3" * 20_000
    assert parse_boxes(text, 100, 100) == []


# --- drawing -------------------------------------------------------------------


def _white(width: int = 400, height: int = 300) -> Image.Image:
    return Image.new("RGB", (width, height), WHITE)


def _run_length(image: Image.Image, x: int, y: int, dy: int, color: tuple) -> int:
    """How many pixels of `color` in a row, from (x, y) walking vertically by dy."""
    n = 0
    while 0 <= y < image.height and image.getpixel((x, y)) == color:
        n += 1
        y += dy
    return n


# On 400x300, [[250, 200, 750, 800]] is the pixel box (100, 60)-(300, 240); the outline
# (2 px) covers columns 100-101 and 298-299, rows 60-61 and 238-239.
BOX_400 = "<box>[[250, 200, 750, 800]]</box>"


def test_outline_lands_on_box_edges() -> None:
    image = _white()
    boxes = parse_boxes(BOX_400, *image.size)
    assert boxes == [Box("", 100, 60, 300, 240)]
    assert line_width(*image.size) == 2
    out = draw_boxes(image, boxes)
    color = PALETTE[0]
    # Left and right edges, at mid height.
    for x in (100, 101, 298, 299):
        assert out.getpixel((x, 150)) == color, x
    for x in (99, 102, 297, 300):
        assert out.getpixel((x, 150)) == WHITE, x
    # Top and bottom edges, at mid width (no label, so nothing above the box).
    for y in (60, 61, 238, 239):
        assert out.getpixel((200, y)) == color, y
    for y in (59, 62, 237, 240):
        assert out.getpixel((200, y)) == WHITE, y
    assert out.getpixel((200, 150)) == WHITE
    assert out.getpixel((0, 0)) == WHITE


def test_labelled_box_edges_and_band() -> None:
    image = _white()
    out = draw_boxes(image, parse_boxes("<ref>cat</ref>" + BOX_400, *image.size))
    color = label_colors(["cat"])["cat"]
    # Edges away from the label band.
    assert out.getpixel((100, 150)) == color
    assert out.getpixel((99, 150)) == WHITE
    assert out.getpixel((102, 150)) == WHITE
    assert out.getpixel((200, 239)) == color
    assert out.getpixel((200, 240)) == WHITE
    # The band sits on the box's top edge: a tall run of the label colour above row 60
    # in the band's left padding, and white above it.
    band = _run_length(out, 101, 59, -1, color)
    assert 10 <= band < 60
    assert out.getpixel((101, 59 - band)) == WHITE
    # The band holds text, so not every pixel in it is the fill colour.
    band_pixels = {out.getpixel((x, y)) for x in range(100, 200) for y in range(60 - band, 60)}
    assert len(band_pixels) > 1
    # Far to the right of a short label, above the box, is still white.
    assert out.getpixel((290, 55)) == WHITE


def test_label_band_inside_image_when_box_touches_top() -> None:
    image = _white()
    out = draw_boxes(image, parse_boxes("<ref>cat</ref><box>[[250, 0, 750, 800]]</box>", 400, 300))
    color = label_colors(["cat"])["cat"]
    # No room above, so the band is drawn inside the box from row 0: a run of colour far
    # taller than the 2 px outline.
    assert _run_length(out, 101, 0, 1, color) >= 10


def test_box_on_right_and_bottom_edge_is_visible() -> None:
    out = draw_boxes(_white(), parse_boxes("<box>[[0, 0, 1000, 1000]]</box>", 400, 300))
    color = PALETTE[0]
    assert out.getpixel((399, 150)) == color
    assert out.getpixel((200, 299)) == color
    assert out.getpixel((0, 150)) == color
    assert out.getpixel((200, 150)) == WHITE


def test_distinct_labels_get_distinct_colours() -> None:
    reply = (
        "<ref>cat</ref><box>[[100, 100, 400, 900]]</box>"
        "<ref>dog</ref><box>[[600, 100, 900, 900], [450, 450, 550, 550]]</box>"
    )
    out = draw_boxes(_white(), parse_boxes(reply, 400, 300))
    cat = out.getpixel((40, 200))  # left edge of the cat box
    dog = out.getpixel((240, 200))  # left edge of the first dog box
    dog2 = out.getpixel((180, 150))  # left edge of the second dog box
    assert cat != dog
    assert WHITE not in (cat, dog)
    assert dog2 == dog
    assert {cat, dog} == set(label_colors(["cat", "dog"]).values())


def test_label_colors_helper() -> None:
    colors = label_colors(["a", "b", "a", "", "c"])
    assert list(colors) == ["a", "b", "", "c"]
    assert len(set(colors.values())) == 4
    assert len(set(PALETTE)) == len(PALETTE)
    # More labels than colours: reuse in turn instead of failing.
    many = label_colors(str(i) for i in range(len(PALETTE) + 1))
    assert many[str(len(PALETTE))] == PALETTE[0]


def test_input_image_unchanged_and_new_rgb_returned() -> None:
    image = _white()
    before = image.tobytes()
    out = draw_boxes(image, parse_boxes("<ref>cat</ref>" + BOX_400, 400, 300))
    assert out is not image
    assert out.mode == "RGB"
    assert out.size == image.size
    assert image.tobytes() == before
    assert out.tobytes() != before


def test_no_boxes_returns_a_copy() -> None:
    image = _white()
    out = draw_boxes(image, [])
    assert out is not image
    assert out.tobytes() == image.tobytes()


def test_non_rgb_inputs() -> None:
    rgba = Image.new("RGBA", (50, 40), (0, 0, 0, 0))
    out = draw_boxes(rgba, [])
    assert out.mode == "RGB"
    assert out.getpixel((10, 10)) == WHITE  # transparent becomes white, not black
    grey = Image.new("L", (50, 40), 255)
    out = draw_boxes(grey, parse_boxes("<ref>a</ref><box>[[0, 0, 500, 500]]</box>", 50, 40))
    assert out.mode == "RGB"
    assert grey.getpixel((0, 0)) == 255


@pytest.mark.parametrize("size", [(30, 20), (1, 1), (4000, 3000), (300, 1000)])
def test_extreme_sizes_do_not_crash(size: tuple[int, int]) -> None:
    reply = (
        "<ref>a long label for a tiny image</ref>"
        "<box>[[0, 0, 1000, 1000], [990, 990, 1000, 1000]]</box>"
        "<ref>b</ref><box>[[500, 0, 500, 0]]</box><box>[[100, 100, 200, 200]]</box>"
    )
    out = draw_boxes(Image.new("RGB", size, WHITE), parse_boxes(reply, *size))
    assert out.size == size


def test_label_text_scales_with_image() -> None:
    small = draw_boxes(_white(400, 300), parse_boxes("<ref>cat</ref>" + BOX_400, 400, 300))
    big = draw_boxes(_white(4000, 3000), parse_boxes("<ref>cat</ref>" + BOX_400, 4000, 3000))
    color = label_colors(["cat"])["cat"]
    small_band = _run_length(small, 101, 59, -1, color)
    big_band = _run_length(big, 1001, 599, -1, color)
    assert big_band >= 5 * small_band
    assert line_width(4000, 3000) == 15


def test_boxes_scaled_to_a_smaller_copy_land_on_the_same_content() -> None:
    # The grounding tab draws on a copy of at most 2048 px a side; boxes stay in full pixels.
    full = parse_boxes("<ref>cat</ref><box>[[100, 200, 300, 400]]</box>", 8000, 6000)
    assert full == [Box("cat", 800.0, 1200.0, 2400.0, 2400.0)]
    assert scale_boxes(full, 2048 / 8000, 1536 / 6000) == parse_boxes(
        "<ref>cat</ref><box>[[100, 200, 300, 400]]</box>", 2048, 1536
    )
