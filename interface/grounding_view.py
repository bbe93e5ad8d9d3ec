"""Boxes from answers, drawn on the image the user sent (upright, scaled down if it is huge).

Boxes are always in pixels of the full image; only the drawing is made on a bounded copy.
Everything here is keyed by the image's path: an uploaded file is never rewritten in place.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from gradio.utils import get_upload_folder
from PIL import Image

from model_backend.grounding import Box, draw_boxes, parse_boxes, scale_boxes
from model_backend.images import load_image
from model_backend.media import BoundedCache, image_size

# Drawings are made on a copy at most this many pixels wide or high: a new box on a 63 MP photo
# re-encoded at full size took two seconds while the model's slot was held. The page shows the
# drawing far smaller anyway.
DRAWING_MAX_SIDE = 2048


def drawings_dir() -> Path:
    """This process's own folder for drawings and box files (private, removed at exit), in
    Gradio's: Gradio serves them as they are instead of hashing and copying every drawing of
    the conversation into its cache on each screen update."""
    return _drawings_dir(get_upload_folder())


@lru_cache
def _drawings_dir(gradio_folder: str) -> Path:
    Path(gradio_folder).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="internvl-demo-boxes-", dir=gradio_folder))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def image_bytes(image: Image.Image) -> int:
    return image.width * image.height * 4  # Pillow keeps RGB as RGBX


# The upright copies drawings are made on: a new box in a streaming answer is drawn on the copy
# already decoded. Four copies of the largest size (16 MB each), more of smaller images.
DRAWING_BASES = BoundedCache(64 * 2**20, image_bytes)


def drawing_base(path: str) -> Image.Image:
    """The image as the model saw it (EXIF applied), scaled down to DRAWING_MAX_SIDE."""
    return DRAWING_BASES.get_or_make(path, lambda: load_image(path, max_side=DRAWING_MAX_SIDE))


@lru_cache(maxsize=64)
def full_size(path: str) -> tuple[int, int]:
    """The upright image's (width, height), from its header: nothing is decoded."""
    return image_size(path)


def answer_boxes(image_path: str, answer: str) -> tuple[Box, ...]:
    """The boxes closed so far in an answer, in pixels of the (full, upright) image."""
    width, height = full_size(image_path)
    return tuple(parse_boxes(answer, width, height))


def annotated_file(image_path: str, boxes: tuple[Box, ...]) -> str:
    """The image with the boxes drawn, on a copy of at most DRAWING_MAX_SIDE a side (drawn once
    per set of boxes, while the file is kept). A JPEG photo gives a JPEG (encoded some fifty
    times faster than a PNG), any other image a quickly compressed, lossless PNG."""
    jpeg = Path(image_path).suffix.lower() in (".jpg", ".jpeg")
    path = drawings_dir() / f"{abs(hash((image_path, boxes))):x}{'.jpg' if jpeg else '.png'}"
    if path.is_file():
        os.utime(path)  # used again: among the newest, so kept
        return str(path)
    base = drawing_base(image_path)
    width, height = full_size(image_path)
    drawing = draw_boxes(base, scale_boxes(boxes, base.width / width, base.height / height))
    if jpeg:
        drawing.save(path, quality=90, subsampling=0)  # no chroma subsampling: crisp lines
    else:
        drawing.save(path, compress_level=1)
    keep_newest(drawings_dir(), KEPT_FILES)
    return str(path)


# Files kept in the drawings folder; older ones go (the page already has its copy, and a drawing
# asked for again is drawn again).
KEPT_FILES = 256


def keep_newest(folder: Path, count: int) -> None:
    """Delete all but the `count` most recently written files of `folder`."""
    files = sorted(folder.iterdir(), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for old in files[count:]:
        old.unlink(missing_ok=True)


def boxes_table(boxes: tuple[Box, ...]) -> list[list]:
    """Rows of label and pixel box, for a table."""
    return [[b.label, round(b.x1), round(b.y1), round(b.x2), round(b.y2)] for b in boxes]


def boxes_json(boxes: tuple[Box, ...]) -> list[dict]:
    return [
        {
            "label": b.label,
            "x1": round(b.x1, 1),
            "y1": round(b.y1, 1),
            "x2": round(b.x2, 1),
            "y2": round(b.y2, 1),
        }
        for b in boxes
    ]


def boxes_json_file(image_path: str, boxes: tuple[Box, ...]) -> str:
    """A downloadable JSON file of the boxes, with the image's size."""
    width, height = full_size(image_path)
    path = drawings_dir() / f"boxes-{abs(hash((image_path, boxes))):x}.json"
    if path.is_file():  # written for these boxes already (a streaming answer asks again)
        os.utime(path)
        return str(path)
    content = {
        "image": Path(image_path).name,
        "width": width,
        "height": height,
        "boxes": boxes_json(boxes),
    }
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False))
    keep_newest(drawings_dir(), KEPT_FILES)
    return str(path)
