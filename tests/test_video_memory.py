"""Video pixel bombs and parallel decodes: what one request, or several at once, may hold.

Memory is measured in a fresh Python (VmHWM, VmRSS) so that each figure is the decode's own; a
data limit makes a regression fail fast instead of swapping the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from model_backend import media
from model_backend.base import VideoClip
from tests.conftest import REPO, wait_until
from tests.media_files import write_gif_bomb, write_video

# Four requests at once for the same kind of GIF, each in its own thread (as Gradio runs them);
# prints what each got and the memory figures in MiB.
PARALLEL_REQUESTS = """
import json, resource, sys, threading
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # a regression fails fast
from model_backend import media
from model_backend.base import VideoClip

def mib(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) // 1024

base = mib("VmRSS")
results = []

def ask(path):
    try:
        frames, _ = media.sample_video(VideoClip(path, num_frames=int(sys.argv[1])))
        results.append([frame.size for frame in frames])
    except Exception as error:
        results.append(f"{type(error).__name__}: {error}")

threads = [threading.Thread(target=ask, args=(path,)) for path in sys.argv[2:]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"results": results, "peak": mib("VmHWM") - base, "after": mib("VmRSS") - base}))
"""


def parallel_requests(paths, num_frames: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PARALLEL_REQUESTS, str(num_frames), *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_parallel_gif_bombs_are_refused_from_the_header(tmp_path):
    # The red team's bomb: a tiny GIF, a 16000x16000 canvas, four 1-pixel frames. Decoded, each
    # frame is a 1 GB canvas; four requests at once took the server from 2.9 to 8.3 GB.
    bombs = [write_gif_bomb(tmp_path / f"bomb{i}.gif", 16000, 16000, 4) for i in range(4)]
    assert bombs[0].stat().st_size < 200
    figures = parallel_requests(bombs, 4)
    for result in figures["results"]:
        assert "16000x16000" in result and "limit" in result, result
    assert figures["peak"] < 100  # MiB: nothing was decoded


def test_parallel_large_gifs_hold_bounded_memory_that_comes_back(tmp_path):
    # Under the limit, but far larger than the model needs: 4 requests at once decode two at a
    # time, each frame straight to at most full-HD's pixel count, and once they are answered
    # only the frame cache (bounded) stays, without anyone pressing Clear.
    gifs = [write_gif_bomb(tmp_path / f"large{i}.gif", 3000, 3000, 8) for i in range(4)]
    figures = parallel_requests(gifs, 8)
    for result in figures["results"]:
        assert isinstance(result, list), result
        assert all(w * h <= 1920 * 1080 and w == h for w, h in result), result  # OUT_PIXELS
    # Bounds, not figures (those are in benchmarks/RESULTS.md): full-size frames alone would
    # be 4 x 8 x 36 MB, and the frame cache keeps 4 x 8 frames of at most 8 MB.
    assert figures["peak"] < 1000
    assert figures["after"] < 600


def test_parallel_decodes_wait_for_a_slot(tmp_path, monkeypatch):
    clip_file = write_video(tmp_path / "clip.mp4", "libx264", 25, 30)
    real_read = media.read_frames
    lock = threading.Lock()
    release = threading.Event()
    in_flight = most = 0

    def held_read(*args):
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        release.wait(timeout=30)  # the test lets every decode go once it has seen them wait
        with lock:
            in_flight -= 1
        return real_read(*args)

    monkeypatch.setattr(media, "read_frames", held_read)
    media.FRAME_CACHE.clear()
    clips = [VideoClip(str(clip_file), num_frames=n) for n in (4, 5, 6, 7)]  # four cache keys
    got = {}
    threads = [
        threading.Thread(target=lambda c=c: got.update({c.num_frames: media.sample_video(c)}))
        for c in clips
    ]
    for thread in threads:
        thread.start()
    slots = getattr(media, "DECODE_SLOTS", None)

    def settled() -> bool:  # every request is decoding, or waiting for a slot
        return most == len(clips) or bool(slots and in_flight + slots.waiting == len(clips))

    assert wait_until(settled, timeout=10)
    seen = most
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert seen <= 2, f"{seen} videos were decoded at once"
    assert {n: len(frames) for n, (frames, _) in got.items()} == {4: 4, 5: 5, 6: 6, 7: 7}
    assert slots.waiting == 0


def test_video_preview_runs_a_few_at_a_time_and_only_the_latest():
    import gradio as gr

    from interface.video_chat import build_video_chat_tab
    from model_backend.base import GenerationSettings
    from tests.scripted_backend import ScriptedBackend

    with gr.Blocks() as demo:
        build_video_chat_tab(ScriptedBackend("ok"), GenerationSettings(), "", 1)
    previews = [fn for fn in demo.fns.values() if fn.name == "show_frames"]
    assert len(previews) == 1
    preview = previews[0]
    assert preview.concurrency_limit is not None and preview.concurrency_limit <= 2
    assert preview.concurrency_id != "model"  # previews never wait for an answer
    assert preview.trigger_mode == "always_last"  # a dragged slider asks for one decode
    assert preview.concurrency_limit == media.DECODE_SLOTS.count
