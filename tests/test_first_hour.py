"""The first minutes of a new user: mistakes and missing pieces get one clear message, fast.

Each test runs `python app.py` as a user would, in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_remote import free_port


def run_app(*args: str, env: dict | None = None, timeout: int = 120):
    base = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_network_is_said_once_without_retrying(tmp_path):
    """No HF_HUB_OFFLINE, and nothing answers where the Hub should be (a closed local port):
    before, the Hub client retried with back-off and printed a warning per try."""
    result = run_app(
        "--model",
        "OpenGVLab/InternVL2_5-2B-MPO-hf",
        env={"HF_HOME": str(tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "Retry" not in message and "Traceback" not in message
    assert "cannot be reached" in message
    assert "--model PATH" in message
    assert len(message.split("\n\n")) == 1


def test_a_mistyped_folder_is_called_a_missing_folder(tmp_path):
    result = run_app("--model", "./tiny-modle", env={"HF_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "The folder ./tiny-modle does not exist" in result.stderr
    assert "repo" not in result.stderr.lower()  # before: a message about Hub repo ids


def test_openai_backend_without_endpoint_is_refused_before_anything_loads():
    result = run_app("--backend", "openai", timeout=60)
    assert result.returncode == 2
    assert "--endpoint" in result.stderr
    assert "usage:" in result.stderr  # refused while reading the flags, before any import
    assert "Traceback" not in result.stderr


def test_engine_down_at_start_does_not_talk_about_a_conversation():
    result = run_app("--backend", "openai", "--endpoint", f"http://127.0.0.1:{free_port()}/v1")
    assert result.returncode == 2
    assert "Cannot reach the engine" in result.stderr
    assert "conversation" not in result.stderr


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on"])
def test_share_variables_are_read_like_flags(value):
    import app

    os.environ["INTERNVL_SHARE"] = value
    try:
        assert app.parse_args([]).share is True
    finally:
        del os.environ["INTERNVL_SHARE"]


def test_gradio_share_gets_the_no_auth_warning(monkeypatch):
    import app

    monkeypatch.setenv("GRADIO_SHARE", "true")
    args = app.parse_args([])
    assert args.share is True
    assert "--share" in app.exposure_warning(args, [])


def test_sigterm_ends_the_app_cleanly_with_its_temp_files(tiny_checkpoint, tmp_path):
    """`docker stop` sends SIGTERM: the app must end through its exit handlers (which remove
    its temporary files), not be killed where it stands."""
    import signal

    import httpx

    from tests.conftest import wait_until

    port = free_port()
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(tmp_path)}
    app = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(tiny_checkpoint), "--port", str(port)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def serving() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(serving, timeout=120), "the app did not start"
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 0  # ended by its handlers, not killed by the signal
    finally:
        app.kill()
    assert "Traceback" not in app.stderr.read()
