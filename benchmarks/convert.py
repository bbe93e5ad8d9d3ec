"""Conversion of an original-format checkpoint: rate and peak memory against the shard size.

An original-format InternLM2 checkpoint of about 1.5 GB (float32, 4 shards, the real layout
and tokenizer files of tests/original_format.py with bigger layers) is converted in a fresh
process; the rate is the source's bytes over the wall time, the median of a few runs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import peak_rss_mib, table

# Big enough that reading and writing the tensors dominates (not imports or the tokenizer).
LLM_SIZES = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 6,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
VISION_SIZES = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 4,
}
SHARDS = 4

# A tiny conversion first, so that the timed one does not include importing transformers.
CONVERT = """
import sys, time
from model_backend.convert import convert_checkpoint
started = time.perf_counter()
convert_checkpoint(sys.argv[3], sys.argv[2] + '-warmup', progress=False)
print('WARMUP', time.perf_counter() - started)
started = time.perf_counter()
convert_checkpoint(sys.argv[1], sys.argv[2], progress=False)
print('SECONDS', time.perf_counter() - started)
"""


def write_sources(folder: Path) -> tuple[Path, Path]:
    """(the big checkpoint, a tiny one for the warm-up)"""
    from tests import original_format

    tiny = original_format.write_original_checkpoint(folder / "tiny", "internlm2", "300m")
    saved = dict(original_format.LLM_SIZES), dict(original_format.VISION_SIZES)
    original_format.LLM_SIZES.update(LLM_SIZES)
    original_format.VISION_SIZES.update(VISION_SIZES)
    try:
        big = original_format.write_original_checkpoint(
            folder / "big", "internlm2", "300m", shards=SHARDS
        )
    finally:
        original_format.LLM_SIZES.update(saved[0])
        original_format.VISION_SIZES.update(saved[1])
    return big, tiny


def run(runs: int = 3) -> str:
    work = Path(tempfile.mkdtemp(prefix="convert-benchmark-"))
    try:
        source, tiny = write_sources(work)
        shards = sorted(source.glob("model-*.safetensors"))
        total = sum(p.stat().st_size for p in shards)
        largest = max(p.stat().st_size for p in shards)
        seconds, peaks, startup = [], [], []
        for run_number in range(runs):
            destination = work / f"native-{run_number}"
            peak, output = peak_rss_mib(CONVERT, str(source), str(destination), str(tiny))
            startup.append(float(output.split("WARMUP")[1].split()[0]))
            seconds.append(float(output.split("SECONDS")[1]))
            peaks.append(peak)
            shutil.rmtree(destination)
            shutil.rmtree(f"{destination}-warmup")
        baseline, _ = peak_rss_mib("import model_backend.convert, torch, transformers")
        median = statistics.median(seconds)
        rows = [
            [
                "source",
                "shards (largest)",
                "start-up s",
                "median s",
                "rate",
                "peak RSS",
                "imports alone",
            ],
            [
                f"{total / 1e9:.2f} GB",
                f"{len(shards)} ({largest / 1e6:.0f} MB)",
                f"{statistics.median(startup):.1f}",
                f"{median:.1f}",
                f"{total / 1e9 / median:.2f} GB/s",
                f"{max(peaks):.0f} MiB",
                f"{baseline:.0f} MiB",
            ],
        ]
        return (
            "### Conversion of an original-format checkpoint (InternLM2, packed wqkv split, "
            f"{runs} runs)\n\n{table(rows)}\n\nStart-up: importing transformers and a tiny "
            "conversion, paid once per conversion. Peak memory above the imports is about one "
            "shard (the tensors of the shard being converted), not the model."
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
