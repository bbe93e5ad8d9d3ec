"""Shared fixtures: the tiny checkpoint, a backend on it, the app launched in-process, a spy
on what reaches the backend, the example files, and the browser."""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# The example files tests use most (licences in examples/LICENSES).
CAT = str(EXAMPLES / "cat.jpg")  # 451x300
COFFEE = str(EXAMPLES / "coffee.jpg")  # 600x400
ROCKET = str(EXAMPLES / "rocket.jpg")  # 640x427
BOUNCING_BALL = str(EXAMPLES / "bouncing_ball.mp4")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny random-weight checkpoint, written once per test session."""
    from model_backend.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


CREATED_BACKENDS: list = []  # the session backend, once a test has asked for it


@pytest.fixture(scope="session")
def backend(tiny_checkpoint):
    from model_backend.local import LocalBackend

    CREATED_BACKENDS.append(LocalBackend(str(tiny_checkpoint), device="cpu"))
    return CREATED_BACKENDS[-1]


@pytest.fixture(autouse=True)
def fresh_backend_caches(request):
    """A test that used the session backend leaves nothing kept for the next one (its
    conversations' prefix caches). Tests that do not use it neither create nor clear it."""
    yield
    # The value the test got (getfixturevalue would fail for a module's own function-scoped
    # `backend`, already torn down by now).
    used = (request.node.funcargs or {}).get("backend")
    if used is not None and used in CREATED_BACKENDS:  # not a module's own backend of that name
        used.clear_cache()


class StreamCall(NamedTuple):
    """One call of a backend's `stream`: what the UI or API sent."""

    conversation: object
    settings: object
    kwargs: dict  # model=, chat=


def spy_on_stream(backend, monkeypatch) -> list[StreamCall]:
    """Record each call of `backend.stream`, which still streams the real answer."""
    calls: list[StreamCall] = []
    real_stream = backend.stream

    def spy(conversation, settings, **kwargs):
        calls.append(StreamCall(conversation, settings, kwargs))
        return real_stream(conversation, settings, **kwargs)

    monkeypatch.setattr(backend, "stream", spy)
    return calls


@pytest.fixture
def stream_spy(backend, monkeypatch) -> list[StreamCall]:
    """The calls of the session backend's `stream` during the test."""
    return spy_on_stream(backend, monkeypatch)


@pytest.fixture(scope="session")
def gradio_temp_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradio")
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    return path


@contextmanager
def launched(backend, **launch_options):
    """The real app around `backend`, launched in this process; yields its URL."""
    from interface.i18n import language_options
    from interface.layout import CSS, build_demo

    demo = build_demo(backend)
    demo.queue()
    launch_options = {**language_options(), **launch_options}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, css=CSS, **launch_options)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def app_url(backend, gradio_temp_dir):
    """The real app on the tiny checkpoint."""
    with launched(backend) as url:
        yield url


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    yield client
    client.close()


def wait_until(condition, timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)  # poll
    return bool(condition())


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "internvl-generate"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (Playwright's own browser download is not used).
    Tests that use it are marked `browser`; without chromium they are skipped, except on CI."""
    if CHROMIUM is None and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


class FakeStore:
    """Records the preference pairs it is given, as interface.preferences.PreferenceStore's
    add_pair receives them."""

    def __init__(self):
        self.pairs: list[dict] = []

    def add_pair(self, **pair) -> dict:
        self.pairs.append(pair)
        return pair


def playwright_expect():
    """Playwright's expect, waiting up to 30 s (a 2-core machine is slow to render)."""
    expect = pytest.importorskip("playwright.sync_api").expect
    expect.set_options(timeout=30_000)
    return expect


ARTIFACTS = REPO / "test-artifacts"  # screenshots of the browser tests


class SlowerModel:
    """Logits processor that makes the tiny model decode at a real model's pace (~50 tokens/s).

    The tiny checkpoint is so fast that an answer would end before anyone could press Stop.
    """

    def __call__(self, input_ids, scores):
        time.sleep(0.02)  # simulated decoding time of one token, not a wait for a condition
        return scores


@pytest.fixture
def slow_backend(backend, monkeypatch):
    """The session backend, decoding at a real model's pace for this test."""
    real_kwargs = backend.generation_kwargs

    def with_slower_model(settings, prompt_tokens):
        return {**real_kwargs(settings, prompt_tokens), "logits_processor": [SlowerModel()]}

    monkeypatch.setattr(backend, "generation_kwargs", with_slower_model)
    return backend
