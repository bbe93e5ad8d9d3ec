"""Grounding: parse InternVL 2.5 boxes out of a reply and draw them on the image.

InternVL 2.5 answers a grounding question with

    <ref>label</ref><box>[[x1, y1, x2, y2], [x1, y1, x2, y2]]</box>

where every coordinate is an integer in 0..1000, relative to the image width (x) or
height (y). A reply may hold several refs, one ref may carry several boxes, and a
``<box>`` may come without a ``<ref>`` in front of it.

The reply is untrusted text, so it is only ever read with regular expressions and a
strict number pattern: nothing in it is evaluated.

Rules for the cases the format leaves open:

* A ``<box>`` belongs to the ``<ref>`` right before it only when nothing but whitespace
  separates ``</ref>`` and ``<box>``; otherwise the box has the label "" and the ref
  stands alone (a span with no boxes).
* Only closed tags count. In a partial (streaming) reply an unfinished ``<ref>`` or
  ``<box>`` at the end is ignored until its closing tag arrives.
* Tags are matched exactly as the model writes them (lower case, no spaces inside).
  Tags do not nest. A stray opening tag is plain text: in ``<ref><ref>a</ref>`` the ref
  is the inner ``<ref>a</ref>``; a ``</box>`` with no ``<box>`` is plain text. A label or
  box body cannot contain another grounding tag.
* Inside a ``<box>`` every innermost ``[...]`` group that holds exactly four plain decimal
  numbers (``12``, ``-5``, ``3.5``, ``.5``) is one box, whatever the bracket depth; any
  other group (three or five items, words, ``1e3``, ``nan``, ``0x10``) is skipped and the
  valid groups around it are kept.
* Each coordinate is clamped to 0..1000, then the corners are swapped where x1 > x2 or
  y1 > y2. A zero-width or zero-height box is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from model_backend.errors import InputError

# The model's coordinate grid: 0..1000 on each axis, whatever the image size.
GRID = 1000.0

NormBox = tuple[float, float, float, float]
Color = tuple[int, int, int]

# Distinct, saturated colours (from Sasha Trubetskoy's list of 20 distinct colours),
# the most distinct first. Labels past the 12th reuse them in turn.
PALETTE: tuple[Color, ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
    (128, 0, 0),  # maroon
    (0, 0, 128),  # navy
)

_TAG = r"(?:<ref>|</ref>|<box>|</box>)"
# Label / body: shortest run of text holding no grounding tag, so tags never nest and a
# stray opening tag is skipped in favour of the innermost complete pair.
_NO_TAG = rf"(?:(?!{_TAG}).)*?"
_SPAN_RE = re.compile(
    rf"<ref>(?P<label>{_NO_TAG})</ref>(?:\s*<box>(?P<ref_body>{_NO_TAG})</box>)?"
    rf"|<box>(?P<body>{_NO_TAG})</box>",
    re.DOTALL,
)
# An innermost bracket group: no bracket inside it.
_GROUP_RE = re.compile(r"\[([^\[\]]*)\]")
# Plain decimal only: float() alone would also take "nan", "inf", "1e3" and "1_0".
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Box:
    """One box in pixels of the image it was parsed for, with its ref label ("" if none)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class GroundingSpan:
    """One grounding element of a reply.

    ``text[start:end]`` is the whole ``<ref>..</ref><box>..</box>``, lone ``<box>..</box>``
    or lone ``<ref>..</ref>``. ``boxes`` are on the model's 0..1000 grid, already clamped
    and ordered (x1 <= x2, y1 <= y2); a lone ref, or a box with nothing valid in it, has
    none.
    """

    start: int
    end: int
    label: str
    boxes: list[NormBox]


def grounding_spans(text: str) -> list[GroundingSpan]:
    """Find every complete grounding element in a (possibly partial) model reply.

    This is the one parser: ``parse_boxes`` and the chat renderer both build on it.
    """
    spans = []
    for match in _SPAN_RE.finditer(text):
        label = match.group("label")
        body = match.group("ref_body") if label is not None else match.group("body")
        spans.append(
            GroundingSpan(
                start=match.start(),
                end=match.end(),
                label=(label or "").strip(),
                boxes=_parse_box_body(body) if body is not None else [],
            )
        )
    return spans


def parse_boxes(text: str, width: int, height: int) -> list[Box]:
    """Return the boxes of a model reply in pixels of a ``width`` x ``height`` image."""
    return [
        Box(
            label=span.label,
            x1=x1 * width / GRID,
            y1=y1 * height / GRID,
            x2=x2 * width / GRID,
            y2=y2 * height / GRID,
        )
        for span in grounding_spans(text)
        for (x1, y1, x2, y2) in span.boxes
    ]


def scale_boxes(boxes: Iterable[Box], x_scale: float, y_scale: float) -> list[Box]:
    """The boxes in pixels of a resized copy of their image (`x_scale` = copy width / width)."""
    return [
        Box(box.label, box.x1 * x_scale, box.y1 * y_scale, box.x2 * x_scale, box.y2 * y_scale)
        for box in boxes
    ]


def _parse_box_body(body: str) -> list[NormBox]:
    """Read the valid quadruples of a ``<box>`` body, skipping malformed groups."""
    boxes = []
    for group in _GROUP_RE.findall(body):
        numbers = _parse_numbers(group)
        if numbers is not None and len(numbers) == 4:
            boxes.append(_normalise(*numbers))
    return boxes


def _parse_numbers(group: str) -> list[float] | None:
    """Split ``"1, 2.5 ,3"`` into floats, or None if any item is not a plain number."""
    items = [item.strip() for item in group.split(",")]
    if not all(_NUMBER_RE.fullmatch(item) for item in items):
        return None
    return [float(item) for item in items]


def _normalise(x1: float, y1: float, x2: float, y2: float) -> NormBox:
    """Clamp to the grid and order the corners."""
    x1, y1, x2, y2 = (min(max(v, 0.0), GRID) for v in (x1, y1, x2, y2))
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def label_colors(labels: Iterable[str]) -> dict[str, Color]:
    """Give each distinct label a palette colour, in order of first appearance."""
    colors: dict[str, Color] = {}
    for label in labels:
        if label not in colors:
            colors[label] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def line_width(width: int, height: int) -> int:
    """Outline width: about 0.5% of the short side, but at least 2 px so it stays visible."""
    return max(2, round(min(width, height) / 200))


def font_size(width: int, height: int) -> int:
    """Label font size: scales with the image so it stays readable once the image is
    shown shrunk (or enlarged) to fit the chat, never below 12 px."""
    return max(12, round(min(width, height) * 0.035))


def draw_boxes(image: Image.Image, boxes: list[Box]) -> Image.Image:
    """Return a new RGB copy of ``image`` with the boxes outlined and labelled.

    Each box is outlined inside its edges: pixel columns ``round(x1)`` to
    ``round(x2) - 1`` and rows ``round(y1)`` to ``round(y2) - 1``. Each distinct label has
    its own colour, and non-empty labels are written on a band of that colour just above
    the box (inside the box's top when there is no room above). ``image`` is not changed.
    """
    out = _to_rgb(image)
    if not boxes:
        return out
    draw = ImageDraw.Draw(out)
    colors = label_colors(box.label for box in boxes)
    width = line_width(*out.size)
    rects = [_pixel_rect(box, *out.size) for box in boxes]
    # All outlines first, then all labels, so no outline crosses a label's text.
    for box, rect in zip(boxes, rects, strict=True):
        draw.rectangle(rect, outline=colors[box.label], width=width)
    font = _load_font(font_size(*out.size))
    for box, rect in zip(boxes, rects, strict=True):
        if box.label:
            _draw_label(draw, out.size, rect, box.label, colors[box.label], font)
    return out


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB copy; transparent pixels become white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # convert() returns a copy even when the mode is already RGB.
    return image.convert("RGB")


def _pixel_rect(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel rectangle of a box, kept inside the image and at least 1 px."""
    left = min(max(round(box.x1), 0), width - 1)
    top = min(max(round(box.y1), 0), height - 1)
    right = min(max(round(box.x2) - 1, left), width - 1)
    bottom = min(max(round(box.y2) - 1, top), height - 1)
    return left, top, right, bottom


def _load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` (Pillow >= 10.1), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        # Old Pillow or no FreeType: a fixed small font beats failing to draw.
        return ImageFont.load_default()


def _text_color(fill: Color) -> Color:
    """Black on light fills, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _draw_label(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    rect: tuple[int, int, int, int],
    label: str,
    color: Color,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """Write ``label`` on a filled band sitting on the box's top edge."""
    width, _ = size
    left, top, _, _ = rect
    tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), label, font=font)
    pad = max(2, round((ty1 - ty0) / 5))
    band_w = tx1 - tx0 + 2 * pad
    band_h = ty1 - ty0 + 2 * pad
    band_top = top - band_h if top - band_h >= 0 else top  # no room above: inside the box
    band_left = max(0, min(left, width - band_w))  # shift left rather than run off the right
    draw.rectangle((band_left, band_top, band_left + band_w - 1, band_top + band_h - 1), fill=color)
    # textbbox is offset from the anchor point; subtract it so the text sits inside the pad.
    draw.text(
        (band_left + pad - tx0, band_top + pad - ty0), label, fill=_text_color(color), font=font
    )


# -- Asking for boxes ---------------------------------------------------------------------------

GROUNDING_MODES = ("find", "detect", "ask")
# The reference's prompts (InternVL 2.5 grounding data and the official demo).
REFERRING_PROMPT = (
    "Please provide the bounding box coordinate of the region this sentence describes: "
    "<ref>{expression}</ref>"
)
DETECTION_PROMPT = (
    "Please detect and label all objects in the following image and mark their positions."
)


def grounding_question(mode: str, text: str) -> str:
    """The question the model is asked in each grounding mode.

    find: `text` is a referring expression ("the cup on the left"); detect: every object (the
    text is not needed); ask: `text` is sent as it is, and boxes are drawn if the answer has any.
    """
    mode = (mode or "").strip().lower()
    text = (text or "").strip()
    if mode not in GROUNDING_MODES:
        raise InputError(f"Unknown mode '{mode}': use one of {', '.join(GROUNDING_MODES)}.")
    if mode == "detect":
        return DETECTION_PROMPT
    if not text:
        what = "what to find (e.g. 'the red cup')" if mode == "find" else "a question"
        raise InputError(f"Please type {what}.")
    return REFERRING_PROMPT.format(expression=text) if mode == "find" else text
