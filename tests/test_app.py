"""The app launched in-process on the tiny checkpoint, driven through gradio_client."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from model_backend.base import GenerationSettings
from tests.conftest import EXAMPLES, generate_threads, wait_until

CAT = str(EXAMPLES / "cat.jpg")


COMMON_PARAMETERS = [
    "history",
    "system_prompt",
    "reasoning",
    "answer_style",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "max_tiles",
    "model",  # added last: clients passing arguments by position keep working
]


def test_only_the_documented_endpoints_are_public(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    chats = {"/image_chat", "/multi_image_chat", "/document_chat", "/video_chat", "/grounding"}
    assert set(endpoints) == chats | {"/compare", "/compare_vote"}

    def names(endpoint):
        return [p["parameter_name"] for p in endpoints[endpoint]["parameters"]]

    assert names("/image_chat") == ["image", "question", *COMMON_PARAMETERS]
    assert names("/multi_image_chat") == ["images", "question", *COMMON_PARAMETERS]
    video = ["video", "question", "num_frames", "start", "end", "tiles_per_frame"]
    assert names("/video_chat") == [*video, *COMMON_PARAMETERS]
    assert names("/grounding") == ["image", "query", "mode", *COMMON_PARAMETERS]
    assert names("/document_chat") == ["document", "question", "pages", *COMMON_PARAMETERS]
    assert names("/compare_vote") == ["choice"]
    sides = ["left_model", "right_model", "left_reasoning", "right_reasoning"]
    assert names("/compare")[:7] == ["question", "images", "video", *sides]
    # The settings' defaults are GenerationSettings' (one source for the UI and the API).
    parameters = endpoints["/image_chat"]["parameters"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in parameters}
    for name, value in asdict(GenerationSettings()).items():
        assert defaults[name] == value, name


def test_image_chat_streams_the_answer_so_far(client):
    job = client.submit(
        handle_file(CAT), "What is this?", max_new_tokens=512, api_name="/image_chat"
    )
    partials = [answer for answer, _thinking in job if answer]
    assert len(partials) > 3
    for shorter, longer in itertools.pairwise(partials):
        assert longer.startswith(shorter)
    assert job.result() == (partials[-1], "")  # (answer, thinking): this model does not think


def test_history_and_settings_reach_the_backend(client, stream_spy):
    history = [
        {"role": "user", "content": "Describe it."},
        {"role": "assistant", "content": "A cat on a rug."},
    ]
    client.predict(
        image=handle_file(CAT),
        question="What colour is it?",
        history=history,
        system_prompt="Be brief.",
        max_new_tokens=8,
        temperature=0,
        api_name="/image_chat",
    )
    conversation, settings, request = stream_spy[-1]
    assert request == {"model": None, "chat": None}  # the default model; no conversation id
    assert conversation.system_prompt == "Be brief."
    assert [t.role for t in conversation.turns] == ["user", "assistant", "user"]
    assert conversation.turns[0].text == "Describe it."
    assert len(conversation.turns[0].images) == 1  # the image belongs to the first question
    assert conversation.turns[2].text == "What colour is it?"
    assert settings.max_new_tokens == 8 and settings.temperature == 0


def test_cancelling_a_job_stops_generation(client):
    job = client.submit(
        handle_file(CAT),
        "Tell me a long story.",
        max_new_tokens=5000,
        temperature=0.7,
        api_name="/image_chat",
    )
    received = 0
    for answer, _thinking in job:
        received += bool(answer)
        if received == 3:
            break
    job.cancel()
    assert wait_until(lambda: not generate_threads(), timeout=15)


def test_a_bad_file_gets_a_clean_error_and_the_next_call_works(client, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a picture")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(fake)), "What is this?", api_name="/image_chat")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((EXAMPLES / "cat.jpg").read_bytes()[:3000])
    with pytest.raises(AppError, match="damaged or truncated"):
        client.predict(handle_file(str(truncated)), "What is this?", api_name="/image_chat")
    answer, _thinking = client.predict(
        handle_file(CAT), "What is this?", max_new_tokens=8, api_name="/image_chat"
    )
    assert answer


def test_an_empty_question_is_refused(client):
    with pytest.raises(AppError, match="type a question"):
        client.predict(handle_file(CAT), "   ", api_name="/image_chat")


def test_malformed_history_is_refused(client):
    with pytest.raises(AppError, match="history must be"):
        client.predict(handle_file(CAT), "Hi", [{"who": "me"}], api_name="/image_chat")


def test_a_path_on_the_server_is_not_readable_through_the_api(app_url, backend, monkeypatch):
    """A raw request naming a server file (gradio_client would upload its own copy first)."""
    calls = []
    monkeypatch.setattr(backend, "stream", lambda *args, **request: calls.append(args))
    server_file = {"path": str(EXAMPLES / "cat.jpg"), "meta": {"_type": "gradio.FileData"}}
    data = [server_file, "What is this?", None, "", False, "Default", 8, 0.2, 0.7, 0, 1.1, 12, ""]
    posted = httpx.post(f"{app_url}gradio_api/call/image_chat", json={"data": data})
    # Refused as it is queued (the queue's validator reads the inputs), or else when it runs.
    if posted.status_code == 200:
        event_id = posted.json()["event_id"]
        events = httpx.get(f"{app_url}gradio_api/call/image_chat/{event_id}", timeout=60).text
        assert "event: error" in events
    else:
        assert "not uploaded by a user" in posted.text
    assert not calls
