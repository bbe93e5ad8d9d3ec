"""Hugging Face ZeroGPU support: `spaces.GPU` around every generation, a no-op elsewhere.

On a ZeroGPU Space the GPU exists only inside functions decorated with `spaces.GPU`, which run
in a forked worker; `spaces` must be imported before torch initialises CUDA, so app.py imports
this module before anything that imports torch. Off Spaces (no SPACES_ZERO_GPU), `spaces.GPU`
returns the function unchanged, and without the `spaces` package this module does the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable

try:  # `spaces` is installed on Spaces (and by requirements.txt); optional anywhere else
    import spaces
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None


def on_zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu_function(duration: Callable[..., int]) -> Callable:
    """Decorate a sync generator with `spaces.GPU(duration=duration)`.

    `duration` takes the same arguments as the function and returns the seconds of GPU time to
    reserve. The decorated function records it as `gpu_duration`, so tests (and readers) can
    see that the wrapper is in place.
    """

    def decorate(function: Callable) -> Callable:
        wrapped = spaces.GPU(duration=duration)(function) if spaces is not None else function
        wrapped.gpu_duration = duration
        return wrapped

    return decorate
