"""Media files made by the tests themselves (nothing is downloaded): encoded videos whose frames
carry their own number in the pixels, so a test can tell exactly which frame it got back."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

BLOCK = 16  # side of one bit square, in pixels
X264 = {"g": "8"}  # short GOPs, so B-frames, keyframes and seeks are all exercised


def pattern(n: int, width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB frame showing the bits of n as a grid of BLOCK-sized black/white squares."""
    cols, rows = width // BLOCK, height // BLOCK
    assert n < 2 ** (cols * rows)
    bits = np.array([(n >> b) & 1 for b in range(cols * rows)], np.uint8).reshape(rows, cols)
    gray = np.kron(bits * 255, np.ones((BLOCK, BLOCK), np.uint8))
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_number(image: Image.Image | np.ndarray) -> int:
    """Inverse of `pattern`: look at the middle of each square."""
    gray = np.asarray(image, np.float32).mean(axis=2)
    rows, cols = gray.shape[0] // BLOCK, gray.shape[1] // BLOCK
    n = 0
    for b in range(rows * cols):
        r, c = divmod(b, cols)
        center = gray[r * BLOCK + 4 : r * BLOCK + 12, c * BLOCK + 4 : c * BLOCK + 12]
        n |= int(center.mean() > 128) << b
    return n


def write_video(
    path: Path,
    codec: str,
    rate: Fraction | int,
    n_frames: int,
    *,
    pix_fmt: str = "yuv420p",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    display_rotation: int | None = None,
    make_frame: Callable[[int], np.ndarray] = pattern,
) -> Path:
    """Encode n_frames frames (frame i = make_frame(i)); pts (in time_base) make it VFR."""
    first = make_frame(0)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], pix_fmt
        if time_base is not None:
            stream.time_base = time_base
        if display_rotation is not None:
            stream.set_display_rotation(display_rotation)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_gif_bomb(path: Path, width: int, height: int, frames: int) -> Path:
    """A GIF of `frames` one-pixel frames on a `width` x `height` canvas: a few bytes a frame,
    but a decoder paints every frame on the whole canvas (a pixel bomb)."""
    data = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0))
    data += bytes((0, 0, 0, 255, 255, 255))  # a global palette of black and white
    for i in range(frames):
        data += b"\x21\xf9\x04\x00" + struct.pack("<H", 10) + b"\x00\x00"  # 0.1 s a frame
        data += b"\x2c" + struct.pack("<HHHHB", i % width, 0, 1, 1, 0)  # a 1x1 image at (i, 0)
        data += b"\x02\x02\x44\x01\x00"  # its LZW data: clear, pixel 0, end
    path.write_bytes(bytes(data + b";"))
    return path
