"""Chat exports: bounded, and removed when the app ends, Ctrl+C and SIGTERM alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from interface import export
from model_backend.errors import InputError
from tests.conftest import EXAMPLES, REPO

CAT = str(EXAMPLES / "cat.jpg")


def conversation(question: str = "What is it?") -> list[dict]:
    return [
        {"role": "user", "text": question, "images": [CAT]},
        {"role": "assistant", "text": "A cat."},
    ]


def test_exports_stay_within_their_budget(monkeypatch):
    one = export.export_size_estimate(conversation())
    monkeypatch.setattr(export, "EXPORT_BUDGET_BYTES", 3 * one)
    written = [export.write_exports(conversation(f"Q{i}?"), "m", {}) for i in range(6)]
    assert export.folder_bytes(export.export_dir()) <= 3 * one
    assert all(Path(path).is_file() for path in written[-1])  # the newest are kept
    assert not any(Path(path).exists() for path in written[0])  # the oldest make room
    monkeypatch.setattr(export, "EXPORT_BUDGET_BYTES", one // 2)
    with pytest.raises(InputError, match=r"too large to export: about .* MB"):
        export.write_exports(conversation(), "m", {})


def test_an_export_is_written_inside_gradios_temp_folder(monkeypatch, tmp_path):
    """So that Gradio serves it as it is, instead of copying it into its cache first."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    json_path, _ = export.write_exports(conversation(), "m", {})
    assert Path(json_path).is_relative_to(tmp_path)


EXPORT_THEN_WAIT = f"""
import signal, sys
from interface.export import exit_on_signals, write_exports
exit_on_signals()
turns = [{{"role": "user", "text": "What is it?", "images": [{CAT!r}]}}]
try:  # the test may signal as soon as the path is printed
    print(write_exports(turns, "m", {{}})[0], flush=True)
    signal.pause()
except KeyboardInterrupt:  # what the app does on Ctrl+C: Gradio closes, launch() returns
    sys.exit(0)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_exports_are_removed_when_the_app_is_stopped(tmp_path, signum):
    app = subprocess.Popen(
        [sys.executable, "-c", EXPORT_THEN_WAIT],
        cwd=REPO,
        env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    exported = Path(app.stdout.readline().strip())
    assert exported.is_file() and exported.is_relative_to(tmp_path)
    app.send_signal(signum)
    assert app.wait(timeout=30) == 0
    assert not exported.exists()
    assert not list(tmp_path.glob("internvl-demo-exports-*"))
