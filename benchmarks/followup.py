"""4. Follow-ups with several users: the KV cache of each conversation's last answer is kept
(the prefix cache, bounded by bytes), so a follow-up skips the prefill of what came before
however users interleave (local backend, tiny checkpoint, greedy, CPU)."""

from __future__ import annotations

import statistics
import tempfile
import time

from benchmarks.common import CACHE, REPO, printable_answers, table

SOURCES = ["coffee.jpg", "cat.jpg", "rocket.jpg", "astronaut.jpg"]
QUESTIONS = [
    "Describe the image.",
    "What colours are there?",
    "Is anything written on it?",
    "Where could this be?",
]
MiB = 2**20


def photos() -> dict[str, str]:
    """Four different 2016x1512 photos (4:3: 12 tiles and a thumbnail each), by user."""
    from PIL import Image

    CACHE.mkdir(parents=True, exist_ok=True)
    paths = {}
    for user, name in zip("ABCD", SOURCES, strict=True):
        path = CACHE / f"followup-{name.split('.')[0]}-2016x1512.jpg"
        if not path.exists():
            source = Image.open(REPO / "examples" / name).convert("RGB")
            source.resize((2016, 1512), Image.Resampling.BICUBIC).save(path, quality=92)
        paths[user] = str(path)
    return paths


def turn(backend, conversation, settings, chat):
    """Seconds from the request to the first increment (images, prompt and prefill included),
    the answer, and its figures."""
    start = time.perf_counter()
    stream = backend.stream(conversation, settings, chat=chat)
    first = None
    text = ""
    for piece in stream:
        if piece and first is None:
            first = time.perf_counter() - start
        text += piece
    return first, text, stream.stats


def conversations(backend, images: dict[str, str], settings, rounds: int) -> dict:
    """Each user asks `rounds` questions about their image; users take turns (A1 B1 C1 D1 A2
    B2 ...). First-turn and follow-up times, the follow-ups' reuse, and every answer."""
    from model_backend.base import Conversation, Turn
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT

    found = {"first": [], "follow-up": [], "reused": [], "fed": [], "answers": []}
    history: dict[str, Conversation] = {}
    for question in QUESTIONS[:rounds]:
        for user, image in images.items():
            if user in history:
                turns = (*history[user].turns, Turn("user", question))
            else:
                turns = (Turn("user", question, (image,)),)
            conversation = Conversation(turns, DEFAULT_SYSTEM_PROMPT)
            seconds, text, stats = turn(backend, conversation, settings, chat=f"user-{user}")
            if user in history:
                found["follow-up"].append(seconds)
                found["reused"].append(stats.reused_tokens / stats.prompt_tokens)
                found["fed"].append(stats.prompt_tokens - stats.reused_tokens)
            else:
                found["first"].append(seconds)
            found["answers"].append(text)
            history[user] = Conversation(
                (*conversation.turns, Turn("assistant", text)), DEFAULT_SYSTEM_PROMPT
            )
    return found


def repeated(backend, images, settings, rounds: int, runs: int) -> dict:
    import model_backend.media as media

    total: dict[str, list] = {}
    for _ in range(runs):
        media.PIXEL_CACHE.clear()  # every first turn decodes and tiles its image
        backend.clear_cache()
        for name, values in conversations(backend, images, settings, rounds).items():
            total.setdefault(name, []).extend(values)
    return total


def memory_after(backend, images, settings, count: int) -> list[str]:
    """`count` conversations of two turns each, one chat each; the prefix cache after."""
    from model_backend.base import Conversation, Turn
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT

    largest = 0
    for number in range(count):
        image = list(images.values())[number % len(images)]
        first = (Turn("user", f"Question {number}: describe it.", (image,)),)
        chat = f"user-{number}"
        _, text, _ = turn(backend, Conversation(first, DEFAULT_SYSTEM_PROMPT), settings, chat)
        follow = (*first, Turn("assistant", text), Turn("user", "And the colours?"))
        turn(backend, Conversation(follow, DEFAULT_SYSTEM_PROMPT), settings, chat)
        largest = max(largest, backend.prefix_cache.bytes)
    cache = backend.prefix_cache
    return [
        str(count),
        str(len(cache)),
        f"{cache.bytes / MiB:.2f}",
        f"{largest / MiB:.2f}",
        f"{cache.budget / MiB:.2f}",
        "yes" if largest <= cache.budget else "NO",
    ]


def run(runs: int = 3, rounds: int = 4) -> str:
    from model_backend.base import GenerationSettings
    from model_backend.local import LocalBackend
    from model_backend.tiny import write_tiny_checkpoint

    checkpoint = str(write_tiny_checkpoint(tempfile.mkdtemp()))
    images = photos()
    settings = GenerationSettings(max_new_tokens=16, temperature=0, max_tiles=12)
    cached = printable_answers(LocalBackend(checkpoint, device="cpu", prefix_cache_gb=1))
    uncached = printable_answers(LocalBackend(checkpoint, device="cpu", prefix_cache_gb=0))
    scenarios = {  # (backend, users, repeats): as many follow-ups for one user as for four
        "one user": (cached, {"A": images["A"]}, 4),
        "four users, interleaved": (cached, images, 1),
        "four users, no prefix cache": (uncached, images, 1),
    }
    results: dict[str, dict] = {name: {} for name in scenarios}
    for _ in range(runs):  # the scenarios in turn, so that a busy moment spreads over all
        for name, (backend, users, repeats) in scenarios.items():
            found = repeated(backend, users, settings, rounds, repeats)
            for key, values in found.items():
                results[name].setdefault(key, []).extend(values)
    rows = [
        [
            "",
            "first turn, ms",
            "follow-up, ms",
            "follow-up / first turn",
            "prompt tokens reused on follow-ups",
            "tokens fed per follow-up",
        ]
    ]
    for name, found in results.items():
        first = statistics.median(found["first"])
        follow = statistics.median(found["follow-up"])
        rows.append(
            [
                name,
                f"{first * 1000:.1f}",
                f"{follow * 1000:.1f}",
                f"{follow / first:.2f}",
                f"{statistics.median(found['reused']):.1%}",
                f"{statistics.median(found['fed']):.0f}",
            ]
        )
    one = statistics.median(results["one user"]["follow-up"])
    four = statistics.median(results["four users, interleaved"]["follow-up"])
    same = (
        results["four users, interleaved"]["answers"]
        == (results["four users, no prefix cache"]["answers"])
    )
    question_tokens = [len(cached.tokenizer(q).input_ids) for q in QUESTIONS[1:rounds]]

    from model_backend.base import Conversation, Turn
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT

    cached.clear_cache()
    probe = Conversation((Turn("user", QUESTIONS[0], (images["A"],)),), DEFAULT_SYSTEM_PROMPT)
    entry = turn(cached, probe, settings, chat="probe")[2]
    entry_bytes = cached.prefix_cache.bytes
    cached.close()
    small = printable_answers(
        LocalBackend(checkpoint, device="cpu", prefix_cache_gb=20.5 * entry_bytes / 2**30)
    )
    memory = [
        ["conversations", "entries kept", "MiB now", "MiB at most", "budget MiB", "within"],
        memory_after(small, images, settings, 50),
    ]
    small.close()
    uncached.close()
    return (
        "### 4. Follow-ups of four users taking turns (2016x1512 photos, 12 tiles + thumbnail "
        f"each, CPU; medians of {runs} runs of {rounds} questions per user)\n\n"
        + table(rows)
        + f"\n\nFour-user follow-up against one-user follow-up: **{four / one:.2f}x** (goal: "
        f"within 1.2x). Greedy answers with and without the prefix cache identical: "
        f"{'yes' if same else 'NO'}. A follow-up feeds only its question and that turn's "
        f"markup: the questions are {min(question_tokens)}-{max(question_tokens)} tokens, the "
        f"markup 22 (the tiny tokenizer has a token per byte), the answer's last token 1. The "
        f"tiny checkpoint has {cached.tokens_per_tile} tokens per tile "
        f"({13 * cached.tokens_per_tile} image tokens per photo here, 3,328 on the real "
        f"models); its answers are kept printable (benchmarks.common.printable_answers) so "
        f"that a conversation sent back holds the tokens the model generated, as a real "
        f"model's does.\n\n"
        "#### The prefix cache after 50 conversations (two turns each, one chat each; a "
        "budget of 20.5 one-turn conversations)\n\n"
        + table(memory)
        + f"\n\nOne conversation's entry here: {entry_bytes / 1024:.0f} KiB "
        f"({entry.prompt_tokens + entry.new_tokens - 1} tokens, measured from its tensors). "
        "On InternVL2.5-8B (32 layers, 8 key/value heads of 128, bfloat16: 128 KiB a token) a "
        "12-tile conversation of about 3,700 tokens holds about 460 MiB, so the CUDA default "
        "(min(16 GiB, 20% of the GPU)) keeps about 35 conversations on an 80 GB GPU, and the "
        "CPU default (min(4 GiB, 10% of the RAM)) about 8."
    )


if __name__ == "__main__":
    print(run())
