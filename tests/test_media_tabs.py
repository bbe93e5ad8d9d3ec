"""Multi-image and video chat: the backend's handling, and the endpoints through gradio_client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

import model_backend.media as media
from model_backend.base import Conversation, GenerationSettings, Turn, VideoClip
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, chat_messages, image_tile_budgets
from tests.conftest import EXAMPLES
from tests.media_files import X264, write_video

IMAGES = [str(EXAMPLES / name) for name in ("cat.jpg", "coffee.jpg", "rocket.jpg")]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    """A real H.264 file: 2 s at 25 fps, each frame showing its own number."""
    return write_video(
        tmp_path_factory.mktemp("video") / "clip.mp4", "libx264", 25, 50, options=X264
    )


# -- backend ----------------------------------------------------------------------------------


def test_video_frames_become_image_tokens(backend, clip_path):
    clip = VideoClip(str(clip_path), num_frames=8, tiles_per_frame=1)
    conversation = Conversation((Turn("user", "What happens?", video=clip),), DEFAULT_SYSTEM_PROMPT)
    inputs = backend.prepare(conversation, GenerationSettings())
    assert inputs.pixel_values.shape[0] == 8  # one tile per frame, no thumbnail
    image_token = backend.model.config.image_token_id
    assert (inputs.input_ids == image_token).sum().item() == 8 * backend.tokens_per_tile
    assert "Frame8: <image>\nWhat happens?" in chat_messages(conversation)[1][1]


def test_follow_up_about_a_video_does_not_decode_it_again(backend, clip_path, monkeypatch):
    decodes = []
    real_read = media.read_frames
    monkeypatch.setattr(media, "read_frames", lambda *a: decodes.append(a) or real_read(*a))
    media.FRAME_CACHE.clear()
    media.PIXEL_CACHE.clear()
    clip = VideoClip(str(clip_path), num_frames=6)
    first = Conversation((Turn("user", "What happens?", video=clip),))
    frames, times = media.sample_video(clip)  # the gallery preview
    assert len(frames) == 6 and times == sorted(times)
    backend.prepare(first, GenerationSettings())
    follow_up = Conversation((*first.turns, Turn("assistant", "x"), Turn("user", "And then?")))
    backend.prepare(follow_up, GenerationSettings())
    assert len(decodes) == 1


def test_too_long_a_conversation_drops_its_oldest_image_turns_with_a_notice(backend, monkeypatch):
    turns = (
        Turn("user", "First?", (IMAGES[0],)),
        Turn("assistant", "One."),
        Turn("user", "Second?", (IMAGES[1],)),
        Turn("assistant", "Two."),
        Turn("user", "Compare."),
    )
    settings = GenerationSettings(max_new_tokens=16, max_tiles=12)
    full = backend.prepare(Conversation(turns), settings).input_ids.shape[1]
    short = backend.prepare(Conversation(turns[2:]), settings).input_ids.shape[1]
    assert short < full
    monkeypatch.setattr(backend.pool.get(backend.info.model), "context_length", short + 16)
    stream = backend.stream(Conversation(turns), settings)
    assert "".join(stream)  # it still answers
    assert stream.stats.prompt_tokens == short
    assert len(stream.notices) == 1 and "1 oldest" in stream.notices[0]


# -- endpoints --------------------------------------------------------------------------------


def test_multi_image_chat_streams_with_numbered_images(client, stream_spy):
    job = client.submit(
        images=[handle_file(path) for path in IMAGES],
        question="Compare Image-1 and Image-3.",
        max_new_tokens=512,
        api_name="/multi_image_chat",
    )
    partials = [answer for answer, _thinking in job if answer]
    assert len(partials) > 3
    conversation = stream_spy[-1].conversation
    user_text = chat_messages(conversation)[-1][1]
    assert user_text.startswith(
        "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nCompare Image-1 and Image-3."
    )
    assert image_tile_budgets(conversation, 12) == [4, 4, 4]  # the turn shares max_tiles


def test_multi_image_chat_enforces_the_image_limit(client, tmp_path):
    copies = []
    for i in range(9):
        copy = tmp_path / f"cat{i}.jpg"
        shutil.copy(IMAGES[0], copy)
        copies.append(handle_file(str(copy)))
    with pytest.raises(AppError, match="limit is 8"):
        client.predict(images=copies, question="Count.", api_name="/multi_image_chat")


def test_video_chat_streams(client, clip_path, stream_spy):
    job = client.submit(
        video=handle_file(str(clip_path)),
        question="What happens?",
        num_frames=8,
        start=0.2,
        end=1.8,
        tiles_per_frame=2,
        max_new_tokens=512,
        api_name="/video_chat",
    )
    partials = [answer for answer, _thinking in job if answer]
    assert len(partials) > 3
    clip = stream_spy[-1].conversation.turns[-1].video
    assert (clip.num_frames, clip.start, clip.end, clip.tiles_per_frame) == (8, 0.2, 1.8, 2)


def test_an_animated_gif_is_a_video(client, tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (64, 48), (i * 40, 0, 0)) for i in range(6)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    answer, _thinking = client.predict(
        video=handle_file(str(gif)),
        question="What changes?",
        num_frames=4,
        max_new_tokens=8,
        api_name="/video_chat",
    )
    assert answer


def text_file(path: Path) -> Path:
    path.write_text("not a video")
    return path


@pytest.mark.parametrize(
    ("make", "arguments", "message"),
    [
        (text_file, {}, "it is not a video file"),
        (None, {"start": 1.5, "end": 0.5}, "before the end"),
        (None, {"start": 30.0}, "past the end"),
    ],
)
def test_bad_videos_get_a_clear_message_and_the_server_keeps_serving(
    client, clip_path, tmp_path, make, arguments, message
):
    path = make(tmp_path / "broken.mp4") if make else clip_path
    with pytest.raises(AppError, match=message):
        client.predict(
            video=handle_file(str(path)), question="What?", api_name="/video_chat", **arguments
        )
    assert client.predict(
        video=handle_file(str(clip_path)),
        question="What?",
        num_frames=4,
        max_new_tokens=4,
        api_name="/video_chat",
    )[0]


def test_reasoning_and_answer_style_reach_the_prompt(client, stream_spy):
    client.predict(
        image=handle_file(IMAGES[0]),
        question="Is it a cat?",
        reasoning=True,
        answer_style="yes_no",
        max_new_tokens=4,
        api_name="/image_chat",
    )
    question = chat_messages(stream_spy[-1].conversation)[-1][1]
    assert question.startswith("<image>\nYour task is to answer the question below.")
    assert question.endswith("Question:\n\nIs it a cat? Please answer with 'Yes' or 'No'.")

    with pytest.raises(AppError, match=r"Unknown answer style .poetic.\. Valid styles"):
        client.predict(
            image=handle_file(IMAGES[0]),
            question="Is it a cat?",
            answer_style="poetic",
            api_name="/image_chat",
        )
