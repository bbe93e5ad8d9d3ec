"""model_backend.media's caches: a file is read and hashed (or checked) once per version of it,
and a rewritten file is read again."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from model_backend import media
from model_backend.errors import InputError


@pytest.fixture
def counted(monkeypatch):
    """Counts of the file reads behind `content_key` and `check_image`."""
    media.FILE_FACTS.clear()
    media.PIXEL_CACHE.clear()
    counts = {"hashed": 0, "decoded": 0}
    digest, load = media._file_digest, media.load_image

    def counting_digest(path):
        counts["hashed"] += 1
        return digest(path)

    def counting_load(path, *args, **kwargs):
        counts["decoded"] += 1
        return load(path, *args, **kwargs)

    monkeypatch.setattr(media, "_file_digest", counting_digest)
    monkeypatch.setattr(media, "load_image", counting_load)
    yield counts
    media.FILE_FACTS.clear()
    media.PIXEL_CACHE.clear()


def _write_png(path, seed: int, size=(64, 48)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _bump_mtime(path) -> None:
    """A later modification time, as a rewrite in the same second would have."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_file_is_hashed_once_per_version(tmp_path, counted):
    photo = tmp_path / "photo.png"
    _write_png(photo, 1)
    first = media.content_key(photo)
    for _ in range(3):  # three turns that show the picture: key, tiles, key again
        assert media.content_key(photo) == first
        media.image_pixels(str(photo), max_tiles=2)
    assert counted["hashed"] == 1

    _write_png(photo, 2)  # rewritten in place: new bytes, new modification time
    _bump_mtime(photo)
    second = media.content_key(photo)
    assert second != first
    assert media.content_key(photo) == second
    assert counted["hashed"] == 2


def test_same_size_rewrite_is_hashed_again(tmp_path, counted):
    photo = tmp_path / "photo.png"
    _write_png(photo, 1)
    first = media.content_key(photo)
    data = bytearray(photo.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    photo.write_bytes(bytes(data))
    _bump_mtime(photo)
    assert media.content_key(photo) != first
    assert counted["hashed"] == 2


def test_the_same_picture_at_another_path_has_the_same_key(tmp_path, counted):
    photo = tmp_path / "photo.png"
    _write_png(photo, 1)
    copy = tmp_path / "upload-2" / "photo.png"  # an API client sends it again
    copy.parent.mkdir()
    shutil.copyfile(photo, copy)
    assert media.content_key(photo) == media.content_key(copy)


def test_an_image_is_checked_once_per_version_and_a_broken_rewrite_is_refused(tmp_path, counted):
    photo = tmp_path / "photo.png"
    _write_png(photo, 1)
    for _ in range(3):
        media.check_image(photo)
    assert counted["decoded"] == 1

    photo.write_bytes(photo.read_bytes()[:100])  # cut short: a new version, damaged
    _bump_mtime(photo)
    for _ in range(2):  # refusals are not remembered: each check looks again
        with pytest.raises(InputError, match="damaged or truncated"):
            media.check_image(photo)
    assert counted["decoded"] == 3


def test_missing_files_are_named(tmp_path, counted):
    for call in (media.content_key, media.check_image):
        with pytest.raises(InputError, match=r"gone\.png could not be found"):
            call(tmp_path / "gone.png")


def test_the_facts_cache_is_bounded(tmp_path, counted, monkeypatch):
    monkeypatch.setattr(media, "FILE_FACTS", media.BoundedCache(2, lambda _: 1))
    photos = [tmp_path / f"photo{i}.png" for i in range(3)]
    for i, photo in enumerate(photos):
        _write_png(photo, i)
        media.content_key(photo)
    assert len(media.FILE_FACTS) == 2
    media.content_key(photos[0])  # the least recently used was dropped: hashed again
    assert counted["hashed"] == 4
