"""Hostile and broken input through the API: a clear error each time, and the server keeps
serving (every case is followed by a request that works)."""

from __future__ import annotations

import json
import struct
import zlib

import httpx
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
    )[0]


def test_a_png_named_jpg_is_still_read(client, tmp_path):
    disguised = tmp_path / "really-a-png.jpg"
    Image.open(CAT).save(disguised, format="PNG")
    assert client.predict(
        image=handle_file(str(disguised)), question="Q?", max_new_tokens=4, api_name="/image_chat"
    )[0]


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
    with pytest.raises(AppError, match=r"temperature must be in \[0, 2\]"):
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


def nested_tokens(length: int) -> str:
    """`<|im_start|>` inside `<|im_` ... `start|>`, again and again: each removal of the inner
    token makes the next one (what took the old token cleaning a minute at 288 KB)."""
    text = "<|im_start|>"
    while len(text) < length:
        text = f"<|im_{text}start|>"
    return text


def test_an_overlong_question_or_system_prompt_is_refused_naming_the_limit(client):
    with pytest.raises(AppError, match=r"question is 288,\d{3} characters long; the limit is"):
        client.predict(
            image=handle_file(CAT), question=nested_tokens(288_000), api_name="/image_chat"
        )
    with pytest.raises(AppError, match=r"system prompt is 50,000 characters long; the limit is"):
        client.predict(
            image=handle_file(CAT),
            question="Q?",
            system_prompt="x" * 50_000,
            api_name="/image_chat",
        )


INF, NAN = float("inf"), float("nan")


def uploaded(app_url: str, path: str) -> dict:
    """A file uploaded to the app, as an API argument."""
    with open(path, "rb") as file:
        (server_path,) = httpx.post(f"{app_url}gradio_api/upload", files={"files": file}).json()
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}}


def raw_call(app_url: str, api_name: str, **arguments) -> str:
    """An API call by plain HTTP, as any client may send it: gradio_client cannot send inf or
    nan (JSON has no such numbers, but Python's json and others write them). Returns the
    stream of events."""
    posted = httpx.post(
        f"{app_url}gradio_api/call/v2/{api_name}",
        content=json.dumps(arguments),  # writes Infinity and NaN
        headers={"Content-Type": "application/json"},
    )
    event_id = posted.json()["event_id"]
    return httpx.get(f"{app_url}gradio_api/call/{api_name}/{event_id}", timeout=60).text


@pytest.mark.parametrize("name", ["max_new_tokens", "top_k", "max_tiles"])
@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_settings_that_are_not_finite_are_refused_by_name(app_url, capfd, caplog, name, value):
    image = uploaded(app_url, CAT)
    events = raw_call(app_url, "image_chat", image=image, question="Q?", **{name: value})
    assert "event: error" in events and f"{name} must be a finite number" in events
    assert "Traceback" not in capfd.readouterr().err
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from tests.media_files import X264, write_video

    folder = tmp_path_factory.mktemp("video")
    return str(write_video(folder / "clip.mp4", "libx264", 10, 20, options=X264))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        *(("num_frames", v, "num_frames must be a finite number") for v in (INF, -INF, NAN)),
        *(("tiles_per_frame", v, "tiles_per_frame must be a finite number") for v in (INF, NAN)),
        ("tiles_per_frame", -INF, "tiles_per_frame must be a finite number"),
        ("end", 1e308, "end must be a time in seconds between 0 and"),
        ("start", NAN, "start must be a finite number"),
    ],
)
def test_bad_video_numbers_are_refused_by_name(app_url, capfd, caplog, video, name, value, message):
    clip = uploaded(app_url, video)
    events = raw_call(app_url, "video_chat", video=clip, question="Q?", **{name: value})
    assert "event: error" in events and message in events
    assert "Traceback" not in capfd.readouterr().err
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_a_history_of_many_long_answers_is_refused_before_any_work():
    """Each earlier answer may be 100,000 characters; the number of them was not bounded."""
    from model_backend.base import MAX_CONVERSATION_CHARS, Conversation, Turn
    from model_backend.errors import InputError

    turns = []
    for _ in range(6):
        turns += [Turn("user", "Go on."), Turn("assistant", "x" * 99_999)]
    conversation = Conversation((*turns, Turn("user", "And?")))
    with pytest.raises(InputError, match=f"the limit is {MAX_CONVERSATION_CHARS:,}"):
        conversation.check()
