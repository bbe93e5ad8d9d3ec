"""What every benchmark shares: medians, the machine's description, peak memory, results."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"  # generated inputs (big videos), git-ignored
RESULTS = HERE / "RESULTS.md"


def median_seconds(function: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of `runs` calls, after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    """One line: CPU, cores, memory, Python, torch, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores{memory}", f"Python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return "; ".join(parts)


def peak_rss_mib(code: str, *args: str) -> tuple[float, str]:
    """Run `code` in a fresh Python (args in sys.argv[1:]); return (peak RSS MiB, its stdout)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    probe = (
        f"exec(compile({code!r}, 'benchmark', 'exec'))\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print('PEAK_KIB', status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    peak = next(int(line.split()[1]) for line in lines if line.startswith("PEAK_KIB"))
    output = "\n".join(line for line in lines if not line.startswith("PEAK_KIB"))
    return peak / 1024, output


def table(rows: list[list[str]]) -> str:
    """A Markdown table; the first row is the header."""
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def printable_answers(backend):
    """Make a LocalBackend on the tiny checkpoint answer printable ASCII only.

    Random weights answer random bytes, which come back from the text as other tokens (a broken
    UTF-8 byte becomes U+FFFD), so a follow-up would not start with the tokens the model
    generated. Like a real model's answers, these do: the conversation sent back holds the very
    tokens of the answer."""
    tokenizer = backend.tokenizer
    allowed = {tokenizer(chr(c)).input_ids[0] for c in range(32, 127)}
    allowed.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    suppressed = [i for i in range(len(tokenizer)) if i not in allowed]
    sampling = backend.generation_kwargs
    backend.generation_kwargs = lambda settings, room: {
        **sampling(settings, room),
        "suppress_tokens": suppressed,
    }
    return backend
