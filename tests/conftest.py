"""Shared fixtures: the tiny checkpoint, a backend on it, and the app launched in-process."""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny random-weight checkpoint, written once per test session."""
    from model_backend.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def backend(tiny_checkpoint):
    from model_backend.local import LocalBackend

    return LocalBackend(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def gradio_temp_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gradio")
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    return path


@contextmanager
def launched(backend, **launch_options):
    """The real app around `backend`, launched in this process; yields its URL."""
    from interface.layout import CSS, build_demo

    demo = build_demo(backend)
    demo.queue()
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
    """Debian's chromium driven by Playwright (Playwright's own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()
