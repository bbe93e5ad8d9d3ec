"""Hostile and broken input through the API: a clear error each time, and the server keeps
serving (every case is followed by a request that works)."""

from __future__ import annotations

import struct
import zlib

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import EXAMPLES

CAT = str(EXAMPLES / "cat.jpg")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height (no pixel data to speak of)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def empty(path):
    path.write_bytes(b"")


def text(path):
    path.write_text("GIF89a? no, just text")


def hundred_megapixels(path):
    path.write_bytes(png_declaring(10_000, 10_000))


def bomb(path):
    path.write_bytes(png_declaring(100_000, 100_000))


def truncated(path):
    path.write_bytes((EXAMPLES / "coffee.jpg").read_bytes()[:5000])


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (empty, "empty.jpg", "empty"),
        (text, "photo.jpg", "not an image"),
        (hundred_megapixels, "huge.png", r"10000x10000 = 100,000,000 pixels"),
        (bomb, "bomb.png", "too large|pixels"),
        (truncated, "cut.jpg", "damaged or truncated"),
    ],
)
def test_bad_images_are_refused_clearly(client, tmp_path, make, name, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(AppError, match=message):
        client.predict(image=handle_file(str(path)), question="What is it?", api_name="/image_chat")
    assert client.predict(
        image=handle_file(CAT), question="What is it?", max_new_tokens=4, api_name="/image_chat"
    )


def test_a_png_named_jpg_is_still_read(client, tmp_path):
    disguised = tmp_path / "really-a-png.jpg"
    Image.open(CAT).save(disguised, format="PNG")
    assert client.predict(
        image=handle_file(str(disguised)), question="Q?", max_new_tokens=4, api_name="/image_chat"
    )


def test_wrong_kinds_of_file_per_endpoint(client, tmp_path):
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(video=handle_file(CAT), question="Q?", api_name="/video_chat")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(
            images=[handle_file(str(notes))], question="Q?", api_name="/multi_image_chat"
        )


def test_settings_out_of_range_are_refused(client):
    with pytest.raises(AppError, match="temperature must be between 0 and 2"):
        client.predict(image=handle_file(CAT), question="Q?", temperature=9, api_name="/image_chat")
    with pytest.raises(AppError, match="max_new_tokens"):
        client.predict(
            image=handle_file(CAT), question="Q?", max_new_tokens=0, api_name="/image_chat"
        )


def test_a_null_number_is_a_clean_error(client):
    with pytest.raises(AppError, match="Invalid parameter"):
        client.predict(
            image=handle_file(CAT), question="Q?", max_new_tokens=None, api_name="/image_chat"
        )
