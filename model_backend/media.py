"""Media -> model-ready tiles, with caches so that later turns do not decode anything again.

Images are identified by their content (a digest of the bytes, taken once per file version:
path, size and modification time), videos by that version alone (hashing gigabytes would cost
more than it saves).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from model_backend.cancel import raise_if_cancelled
from model_backend.errors import InputError
from model_backend.images import load_image
from model_backend.prompt import image_tile_budgets
from model_backend.tiling import TILE_SIZE, count_tiles, image_to_pixel_values
from model_backend.types import Conversation, Turn, VideoClip
from model_backend.video import read_frames


class BoundedCache:
    """A least-recently-used cache that holds at most `max_bytes` of values."""

    def __init__(self, max_bytes: int, size_of: Callable[[object], int]):
        self.max_bytes = max_bytes
        self.size_of = size_of
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], object]):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()  # outside the lock: decoding can take a while
        size = self.size_of(value)
        with self._lock:
            if key not in self._items and size <= self.max_bytes:
                self._items[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class Slots:
    """At most `count` holders at a time; the others wait their turn (a counting semaphore that
    also says how many are waiting)."""

    def __init__(self, count: int):
        self.count = count
        self.waiting = 0
        self._semaphore = threading.Semaphore(count)
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self.waiting += 1
        try:
            self._semaphore.acquire()
        finally:
            with self._lock:
                self.waiting -= 1
        try:
            yield
        finally:
            self._semaphore.release()


def file_key(path: str | Path) -> tuple[str, int, int]:
    try:
        stat = Path(path).stat()
    except OSError as error:
        raise InputError(f"The file {Path(path).name} could not be found.") from error
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _pixel_bytes(value) -> int:
    arrays = value if isinstance(value, list) else [value]
    return sum(array.nbytes for array in arrays)


def _frame_bytes(value) -> int:
    frames, _ = value
    return sum(frame.width * frame.height * 4 for frame in frames)  # Pillow keeps RGB as RGBX


# A 12-tile image is 31 MB of float32 tiles: 512 MB holds a long multi-image conversation.
PIXEL_CACHE = BoundedCache(512 * 1024**2, _pixel_bytes)
# Decoded frames of the last few videos (64 full-HD frames are 530 MB in memory; frames are
# decoded to at most full-HD's pixel count, so one video's frames always fit).
FRAME_CACHE = BoundedCache(1024**3, _frame_bytes)
# Facts about a file version (its digest, that it is a usable image), by (path, size, mtime):
# each is read once however many turns show the file. Bounded by count; each is a few bytes.
FILE_FACTS = BoundedCache(4096, lambda _: 1)
# Videos decoded at once, whoever asks (gallery preview, new turn, API, remote engine): each
# decode holds up to a few full-size frames inside FFmpeg and its sampled frames until cached.
DECODE_SLOTS = Slots(2)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header, as the model will see it (EXIF applied)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"The file {Path(path).name} is not an image Pillow can read.") from error
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def content_key(path: str | Path) -> str:
    """A digest of the file's bytes: the same picture uploaded twice (a new path each time for
    an API client) is recognised. Hashed once per file version (path, size, modification
    time). For images only; videos are identified by `file_key`."""
    return FILE_FACTS.get_or_make(("digest", *file_key(path)), lambda: _file_digest(path))


def _file_digest(path: str | Path) -> str:
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
    except OSError as error:
        raise InputError(f"The file {Path(path).name} could not be found.") from error


def image_pixels(path: str, max_tiles: int, tile_size: int = TILE_SIZE) -> np.ndarray:
    """Tiles of one image file, (tiles, 3, tile, tile) float32."""
    key = ("image", content_key(path), max_tiles, tile_size)
    return PIXEL_CACHE.get_or_make(
        key, lambda: image_to_pixel_values(load_image(path), max_tiles, tile_size=tile_size)
    )


def check_image(path: str | Path) -> None:
    """Raise InputError if the file is not an image the model can use (decoded once per file
    version: a follow-up does not decode the conversation's images again to check them)."""
    raise_if_cancelled()
    FILE_FACTS.get_or_make(("usable image", *file_key(path)), lambda: bool(load_image(path)))


def check_turn(turn: Turn) -> None:
    """Raise InputError unless the model can take the turn's images and video: the one check
    the UI calls for early feedback when a question is added (the backends check again)."""
    for path in turn.images:
        check_image(path)
    if turn.video:
        sample_video(turn.video)  # checks the clip; decodes once, cached for the answer


def image_token_estimate(conversation: Conversation, max_tiles: int) -> list[int]:
    """Tiles (thumbnail included) each image of the conversation will cost, in order.

    Reads only image headers; multiply by the model's tokens per tile for tokens.
    """
    budgets = image_tile_budgets(conversation, max_tiles)
    return [
        count_tiles(*image_size(path), budget)
        for path, budget in zip(conversation.image_paths, budgets, strict=True)
    ]


def sample_video(clip: VideoClip) -> tuple[list[Image.Image], list[float]]:
    """The frames the model will see (upright) and their timestamps in seconds.

    Raises InputError for a clip no model takes. Cached: asking again about the same clip
    does not decode the video again.
    """
    clip.check()
    raise_if_cancelled()
    key = (file_key(clip.path), clip.num_frames, clip.start, clip.end)

    def decode() -> tuple[list[Image.Image], list[float]]:
        with DECODE_SLOTS.held():
            return read_frames(clip.path, clip.num_frames, clip.start, clip.end)

    return FRAME_CACHE.get_or_make(key, decode)


def frame_pixels(clip: VideoClip, tile_size: int = TILE_SIZE) -> list[np.ndarray]:
    """Tiles of every sampled frame: `tiles_per_frame` at most each (one tile, no thumbnail,
    at the reference's default of 1)."""
    key = ("video", file_key(clip.path), clip.num_frames, clip.start, clip.end)
    key += (clip.tiles_per_frame, tile_size)

    def make() -> list[np.ndarray]:
        frames, _ = sample_video(clip)
        return [
            image_to_pixel_values(frame, clip.tiles_per_frame, tile_size=tile_size)
            for frame in frames
        ]

    return PIXEL_CACHE.get_or_make(key, make)
