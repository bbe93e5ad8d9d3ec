"""4. Follow-up latency: the second question about a 12-tile image reuses the first answer's
KV cache (local backend, tiny checkpoint, greedy), against the same follow-up without reuse."""

from __future__ import annotations

import statistics
import tempfile
import time

from benchmarks.common import table
from benchmarks.preprocess import make_inputs


def time_to_first_token(backend, conversation, settings) -> tuple[float, str, int]:
    """Seconds from the request to the first increment (images, prompt and prefill included),
    the answer, and how many prompt tokens came from the cache."""
    start = time.perf_counter()
    stream = backend.stream(conversation, settings)
    first = None
    text = ""
    for piece in stream:
        if piece and first is None:
            first = time.perf_counter() - start
        text += piece
    return first, text, stream.stats.reused_tokens


def run(runs: int = 5) -> str:
    import model_backend.media as media
    from model_backend.base import Conversation, GenerationSettings, Turn
    from model_backend.local import LocalBackend
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
    from model_backend.tiny import write_tiny_checkpoint

    image = make_inputs()["4032x3024 JPEG"]
    backend = LocalBackend(str(write_tiny_checkpoint(tempfile.mkdtemp())), device="cpu")
    settings = GenerationSettings(max_new_tokens=32, temperature=0, max_tiles=12)
    first_turn = Conversation(
        (Turn("user", "Describe the image.", (image,)),), DEFAULT_SYSTEM_PROMPT
    )
    results = {"first": [], "reuse": [], "no reuse": []}
    same = True
    for _ in range(runs):
        media.PIXEL_CACHE.clear()
        backend.clear_cache()
        ttft, answer, _ = time_to_first_token(backend, first_turn, settings)
        results["first"].append(ttft)
        follow_up = Conversation(
            (*first_turn.turns, Turn("assistant", answer), Turn("user", "What colours?")),
            DEFAULT_SYSTEM_PROMPT,
        )
        ttft, with_reuse, reused = time_to_first_token(backend, follow_up, settings)
        results["reuse"].append(ttft)
        backend.clear_cache()
        ttft, without, _ = time_to_first_token(backend, follow_up, settings)
        results["no reuse"].append(ttft)
        same = same and with_reuse == without
    first = statistics.median(results["first"])
    rows = [["", "time to first token, ms", "ratio to the first turn"]]
    for name, label in (
        ("first", "first turn (image decoded, tiled, encoded)"),
        ("reuse", f"follow-up, cache reused ({reused} prompt tokens)"),
        ("no reuse", "follow-up, no reuse (image tiles cached)"),
    ):
        value = statistics.median(results[name])
        rows.append([label, f"{value * 1000:.1f}", f"{value / first:.2f}"])
    image_tokens = 13 * backend.tokens_per_tile
    note = (
        f"Greedy answers with and without reuse identical: {'yes' if same else 'NO'}. "
        f"The tiny checkpoint has {backend.tokens_per_tile} tokens per tile "
        f"({image_tokens} image tokens here; 3,328 on the real models)."
    )
    return (
        "### 4. Follow-up latency (4032x3024 image, 12 tiles + thumbnail, CPU)\n\n"
        + table(rows)
        + "\n\n"
        + note
    )


if __name__ == "__main__":
    print(run())
