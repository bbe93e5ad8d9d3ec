"""The remote-engine backend against a real OpenAI-compatible server on localhost:
`transformers serve` serving the tiny checkpoint (started here, stopped after)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from model_backend.base import Conversation, GenerationSettings, Turn, VideoClip
from model_backend.errors import GenerationError, InputError
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from model_backend.remote import OpenAIBackend, engine_options, openai_messages
from tests.conftest import EXAMPLES, launched, wait_until
from tests.media_files import X264, write_video

CAT, COFFEE = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg")
SERVE = shutil.which("transformers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`transformers serve` in its own process group, so it can be killed and restarted."""

    def __init__(self, checkpoint: Path, port: int):
        self.checkpoint, self.port = checkpoint, port
        self.process: subprocess.Popen | None = None
        self.endpoint = f"http://127.0.0.1:{port}/v1"

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        command = [
            SERVE,
            "serve",
            str(self.checkpoint),
            "--port",
            str(self.port),
            "--device",
            "cpu",
        ]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert wait_until(self.healthy, timeout=180), "transformers serve did not start"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


pytestmark = pytest.mark.skipif(SERVE is None, reason="transformers[serving] is not installed")


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    server = Server(tiny_checkpoint, free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def remote(server):
    return OpenAIBackend(server.endpoint, engine="generic")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return str(write_video(path, "libx264", 25, 50, options=X264))


def ask(question="What is this?", images=(CAT,)) -> Conversation:
    return Conversation((Turn("user", question, tuple(images)),), DEFAULT_SYSTEM_PROMPT)


# -- the request the engine gets (no server needed) ---------------------------------------------


def test_messages_interleave_numbered_images_like_the_prompt_builder():
    conversation = Conversation(
        (
            Turn("user", "Compare.", (CAT, COFFEE)),
            Turn("assistant", "Both warm."),
            Turn("user", "And now?"),
        ),
        "System.",
    )
    messages = openai_messages(conversation, GenerationSettings(max_tiles=12), "generic")
    assert messages[0] == {"role": "system", "content": "System."}
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert parts[0]["text"] == "Image-1: " and parts[2]["text"] == "\nImage-2: "
    assert parts[4]["text"] == "\nCompare."
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert messages[2] == {"role": "assistant", "content": "Both warm."}
    assert messages[3] == {"role": "user", "content": "And now?"}


@pytest.mark.parametrize(
    ("engine", "placeholder"), [("vllm", "<image>"), ("lmdeploy", "<IMAGE_TOKEN>")]
)
def test_engines_get_images_first_and_a_placeholder_at_each_place(engine, placeholder):
    """vLLM and LMDeploy do not keep interleaved parts in order for InternVL; a placeholder
    already in the text keeps each image after its label."""
    conversation = ask("Compare.", images=(CAT, COFFEE))
    parts = openai_messages(conversation, GenerationSettings(max_tiles=12), engine)[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[2]["text"] == f"Image-1: {placeholder}\nImage-2: {placeholder}\nCompare."
    if engine == "lmdeploy":  # LMDeploy: a tile limit per image (12 // 2)
        assert all(p["image_url"]["max_dynamic_patch"] == 6 for p in parts[:2])


def test_tile_limits_follow_each_engine():
    conversation = ask(images=(CAT, COFFEE, CAT))
    settings = GenerationSettings(max_tiles=12, top_k=20, repetition_penalty=1.2)
    vllm = engine_options(conversation, settings, "vllm")
    assert vllm["mm_processor_kwargs"] == {"max_dynamic_patch": 4}
    assert vllm["top_k"] == 20 and vllm["repetition_penalty"] == 1.2
    assert (
        "max_dynamic_patch"
        not in openai_messages(conversation, settings, "vllm")[1]["content"][1]["image_url"]
    )
    assert engine_options(conversation, settings, "generic") == {}


def test_video_goes_as_sampled_frames_with_frame_prefixes(clip):
    video = VideoClip(clip, num_frames=4, tiles_per_frame=2)
    conversation = Conversation((Turn("user", "What happens?", video=video),))
    parts = openai_messages(conversation, GenerationSettings(), "lmdeploy")[0]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    frames = "".join(f"Frame{k}: <IMAGE_TOKEN>\n" for k in range(1, 5))
    assert texts == [frames + "What happens?"]
    images = [p["image_url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 4 and all(i["max_dynamic_patch"] == 2 for i in images)


# -- against the real server ---------------------------------------------------------------------


def test_lists_the_served_models_and_streams(remote, server):
    assert remote.models == [str(server.checkpoint)]
    stream = remote.stream(ask(), GenerationSettings(max_new_tokens=24, temperature=0))
    pieces = [piece for piece in stream if piece]
    assert len(pieces) > 3
    assert stream.stats.new_tokens == len(pieces)
    assert stream.stats.time_to_first_token_s > 0


def test_stop_closes_the_http_stream(remote):
    stream = remote.stream(ask(), GenerationSettings(max_new_tokens=4000, temperature=0.7))
    received = 0
    for piece in stream:
        received += bool(piece)
        if received == 3:
            stream.cancel()  # the Stop button
    assert stream.stats.stopped and stream.stats.new_tokens < 4000
    assert wait_until(lambda: "internvl-remote" not in [t.name for t in threading.enumerate()])
    assert "".join(remote.stream(ask(), GenerationSettings(max_new_tokens=4)))


def test_an_unknown_model_is_refused(remote):
    with pytest.raises(InputError, match="does not serve 'nobody/model'"):
        remote.ensure_model("nobody/model")
    with pytest.raises(InputError, match="does not serve 'nobody/model'"):
        remote.stream(ask(), GenerationSettings(), model="nobody/model")


def test_each_request_names_its_model(server):
    """Each request goes to the engine with the model it names; the default stays."""
    served, other = str(server.checkpoint), "another/model"

    class TwoModels(OpenAIBackend):
        def served_models(self):
            return [served, other]

    remote = TwoModels(server.endpoint)
    sent = []
    create = remote.client.chat.completions.create
    remote.client.chat.completions.create = lambda **body: (
        sent.append(body["model"]) or create(**body)
    )
    assert remote.info.model == served
    info = remote.ensure_model(other)
    assert info.model == other and info.kind == "openai"
    assert remote.describe().model == served
    assert "".join(remote.stream(ask(), GenerationSettings(max_new_tokens=4), model=served))
    with pytest.raises(GenerationError):  # this engine serves one model only: it refuses
        list(remote.stream(ask(), GenerationSettings(max_new_tokens=4), model=other))
    assert "".join(remote.stream(ask(), GenerationSettings(max_new_tokens=4)))
    assert sent == [served, other, served]


def test_every_tab_streams_through_the_app_on_the_remote_backend(remote, clip, gradio_temp_dir):
    calls = {
        "/image_chat": {"image": handle_file(CAT), "question": "What is it?"},
        "/multi_image_chat": {
            "images": [handle_file(CAT), handle_file(COFFEE)],
            "question": "Compare Image-1 and Image-2.",
        },
        "/video_chat": {"video": handle_file(clip), "question": "What happens?", "num_frames": 4},
        "/grounding": {"image": handle_file(COFFEE), "query": "the cup", "mode": "find"},
    }
    with launched(remote) as url:
        client = Client(url, verbose=False)
        for api_name, arguments in calls.items():
            job = client.submit(**arguments, max_new_tokens=512, api_name=api_name)
            outputs = list(job)
            assert len(outputs) > 3, api_name
        client.close()


def test_engine_killed_mid_stream_then_back(tiny_checkpoint):
    server = Server(tiny_checkpoint, free_port())
    server.start()
    try:
        remote = OpenAIBackend(server.endpoint)
        stream = remote.stream(ask(), GenerationSettings(max_new_tokens=4000, temperature=0.7))
        with pytest.raises(GenerationError, match="engine"):
            received = 0
            for piece in stream:
                received += bool(piece)
                if received == 3:
                    server.kill()
        with pytest.raises(GenerationError, match="Cannot reach the engine"):
            list(remote.stream(ask(), GenerationSettings(max_new_tokens=4)))
        server.start()
        assert "".join(remote.stream(ask(), GenerationSettings(max_new_tokens=4)))
    finally:
        server.kill()


def test_no_engine_at_start_is_a_clear_error():
    from model_backend.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"Cannot reach the engine.*--served-model"):
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1")


def test_stop_works_before_the_engine_answers():
    """An engine that accepts the connection and says nothing (a long queue, a big prefill)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted = []

    def engine() -> None:
        models, _ = listener.accept()  # GET /v1/models gets its answer...
        models.recv(65536)
        body = b'{"object": "list", "data": [{"id": "silent", "object": "model"}]}'
        models.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        models.close()
        accepted.append(listener.accept())  # ...the chat request gets none

    threading.Thread(target=engine, daemon=True).start()
    remote = OpenAIBackend(f"http://127.0.0.1:{port}/v1", timeout_s=120)
    assert remote.models == ["silent"]
    stream = remote.stream(ask(), GenerationSettings(max_new_tokens=8))
    assert next(iter(stream)) == ""  # a keep-alive: nothing has come yet
    assert wait_until(lambda: accepted, timeout=10)
    stream.cancel()
    assert list(stream) == []  # ends now, not after the 120 s timeout
    assert stream.stats.stopped
    connection, _ = accepted[0]
    connection.close()  # the engine finally answers (here: hangs up); the reader ends with it
    assert wait_until(lambda: "internvl-remote" not in [t.name for t in threading.enumerate()])
    listener.close()
