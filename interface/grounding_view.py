"""Boxes from answers, drawn on the image the user sent (its full, upright size)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image

from model_backend.grounding import Box, draw_boxes, parse_boxes
from model_backend.images import load_image


@lru_cache(maxsize=1)
def drawings_dir() -> Path:
    """This process's own folder for drawings and box files (private, removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="internvl-demo-boxes-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@lru_cache(maxsize=8)
def upright_image(path: str) -> Image.Image:
    """The image as the model saw it (EXIF applied), at full size."""
    return load_image(path)


def answer_boxes(image_path: str, answer: str) -> tuple[Box, ...]:
    """The boxes closed so far in an answer, in pixels of the image."""
    width, height = upright_image(image_path).size
    return tuple(parse_boxes(answer, width, height))


@lru_cache(maxsize=64)
def annotated_file(image_path: str, boxes: tuple[Box, ...]) -> str:
    """A PNG of the image with the boxes drawn (drawn once per set of boxes)."""
    path = drawings_dir() / f"{abs(hash((image_path, boxes))):x}.png"
    draw_boxes(upright_image(image_path), list(boxes)).save(path)
    return str(path)


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
    width, height = upright_image(image_path).size
    path = drawings_dir() / f"boxes-{abs(hash((image_path, boxes))):x}.json"
    content = {
        "image": Path(image_path).name,
        "width": width,
        "height": height,
        "boxes": boxes_json(boxes),
    }
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False))
    return str(path)
