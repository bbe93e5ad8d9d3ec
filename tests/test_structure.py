"""The house rules that keep the code legible: the two boundaries and no import cycles."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model_backend.errors import InputError
from model_backend.types import SETTING_LIMITS, GenerationSettings


def imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after `statement`."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"import sys\n{statement}\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_interface_loads_no_torch():
    loaded = imported_after("import interface.layout, interface.api, interface.chat")
    assert "gradio" in loaded
    assert "torch" not in loaded


def test_the_local_backend_loads_no_gradio():
    loaded = imported_after("import model_backend.local, model_backend.remote")
    assert "torch" in loaded
    assert "gradio" not in loaded


@pytest.mark.parametrize(
    "module",
    [
        "types",
        "thinking",
        "cancel",
        "prompt",
        "media",
        "video",
        "base",
        "streamer",
        "prefix_cache",
        "model_pool",
        "generation",
        "local",
        "remote",
    ],
)
def test_every_backend_module_imports_first_without_a_cycle(module):
    # A cycle only hidden by imports inside functions shows when a module is imported first.
    assert "model_backend" in imported_after(f"import model_backend.{module}")


def test_the_settings_limits_are_the_ones_checked():
    for name, limit in SETTING_LIMITS.items():
        GenerationSettings(**{name: limit.high}).check()
        with pytest.raises(InputError, match=name):
            GenerationSettings(**{name: limit.high + limit.step}).check()
        if limit.low_open:
            with pytest.raises(InputError, match=name):
                GenerationSettings(**{name: limit.low}).check()
