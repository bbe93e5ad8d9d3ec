"""2. Video sampling: the project's seek-and-decode reader against decoding every frame.

Inputs are generated here (H.264, 1280x720, 25 fps, a keyframe every 2 s): a 10-minute file
and a 1-minute one, to show that time and memory do not grow with the length, and the
10-minute one remuxed with irregular frame times (variable frame rate, as phones record). Each
measurement runs in a fresh process so that its peak memory is its own. The synthetic panning
picture decodes much faster than real footage, which flatters decode-all.
"""

from __future__ import annotations

import importlib.util
import time
from fractions import Fraction

import av
import numpy as np

from benchmarks.common import CACHE, peak_rss_mib, table

FPS, WIDTH, HEIGHT = 25, 1280, 720

PROJECT = """
import sys, time
from model_backend.video import read_frames
start = time.perf_counter()
frames, times = read_frames(sys.argv[1], int(sys.argv[2]))
print(time.perf_counter() - start, len(frames))
"""

DECODE_ALL = """
import sys, time, av
from model_backend.video import probe_video, sample_frame_indices
start = time.perf_counter()
info = probe_video(sys.argv[1])
wanted = set(sample_frame_indices(info.total_frames, info.fps, int(sys.argv[2])))
frames = []
with av.open(sys.argv[1]) as container:
    for index, frame in enumerate(container.decode(video=0)):
        if index in wanted:
            frames.append(frame.to_image())
print(time.perf_counter() - start, len(frames))
"""

DECORD = """
import sys, time
from decord import VideoReader, cpu
from PIL import Image
from model_backend.video import sample_frame_indices
start = time.perf_counter()
reader = VideoReader(sys.argv[1], ctx=cpu(0), num_threads=1)
indices = sample_frame_indices(len(reader), reader.get_avg_fps(), int(sys.argv[2]))
frames = [Image.fromarray(f) for f in reader.get_batch(indices).asnumpy()]
print(time.perf_counter() - start, len(frames))
"""

# What finding the k-th frame in presentation order costs: the mp4 index check that every file
# pays, and the demux-only scan of every packet's timestamp that variable-rate files pay.
FRAME_TIMES = """
import sys, time, av
from model_backend import video
with av.open(sys.argv[1]) as container:
    stream = container.streams.video[0]
    start = time.perf_counter()
    regular = video._regular_index(stream)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    _, pts, _ = video._scan(container, stream, "benchmark", True)
    print(index_s, time.perf_counter() - start, regular, len(pts))
"""


def make_video(minutes: int) -> str:
    """An H.264 720p file with moving content (cached between runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"video-{minutes}min-720p.mp4"
    if path.exists():
        return str(path)
    partial = path.with_suffix(".partial.mp4")
    # Smooth, panning content: compresses like real footage (noise would make gigabytes).
    y, x = np.mgrid[0:HEIGHT, 0 : WIDTH + 400].astype(np.float32)
    base = np.stack(
        [127 + 100 * np.sin(x / 97), 127 + 100 * np.cos(y / 53), 127 + 100 * np.sin((x + y) / 71)],
        axis=2,
    ).astype(np.uint8)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream(
            "libx264", rate=FPS, options={"preset": "ultrafast", "g": "50"}
        )
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(minutes * 60 * FPS):
            shift = index % 400
            frame = av.VideoFrame.from_ndarray(base[:, shift : shift + WIDTH], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return str(path)


def make_vfr_video(minutes: int) -> str:
    """The same pictures with a phone's irregular frame times (25 fps on average), remuxed
    without re-encoding: the encoder made no B-frames, so every packet's pts is its dts."""
    path = CACHE / f"video-{minutes}min-720p-vfr.mp4"
    if path.exists():
        return str(path)
    partial = path.with_suffix(".partial.mp4")
    durations_ms = (30, 40, 50, 40, 20, 60, 40, 40)
    with av.open(make_video(minutes)) as source, av.open(str(partial), "w") as target:
        source_stream = source.streams.video[0]
        stream = target.add_stream_from_template(source_stream)
        stream.time_base = Fraction(1, 1000)
        pts = 0
        for index, packet in enumerate(source.demux(source_stream)):
            if not packet.size:
                continue
            packet.stream, packet.time_base = stream, Fraction(1, 1000)
            packet.pts = packet.dts = pts
            packet.duration = durations_ms[index % len(durations_ms)]
            pts += packet.duration
            target.mux(packet)
    partial.rename(path)
    return str(path)


def measure(code: str, path: str, frames: int, runs: int) -> tuple[float, float]:
    """Median seconds and the largest peak RSS (MiB) over `runs` fresh processes."""
    seconds, peaks = [], []
    for _ in range(runs):
        peak, output = peak_rss_mib(code, path, str(frames))
        seconds.append(float(output.split()[0]))
        peaks.append(peak)
    return float(np.median(seconds)), max(peaks)


def run(runs: int = 3) -> str:
    started = time.perf_counter()
    long_video, short_video = make_video(10), make_video(1)
    generated = time.perf_counter() - started
    decord = importlib.util.find_spec("decord") is not None
    rows = [
        [
            "video",
            "frames",
            "project s",
            "project peak MiB",
            "decode-all s",
            "decode-all peak MiB",
            "speed-up",
            "decord s" if decord else "decord",
        ]
    ]
    for name, path in (("10 min 720p", long_video), ("1 min 720p", short_video)):
        for frames in (16, 32):
            ours, our_peak = measure(PROJECT, path, frames, runs)
            everything, all_peak = measure(DECODE_ALL, path, frames, 1)  # minutes per run
            other = f"{measure(DECORD, path, frames, runs)[0]:.2f}" if decord else "not installed"
            rows.append(
                [
                    name,
                    str(frames),
                    f"{ours:.2f}",
                    f"{our_peak:.0f}",
                    f"{everything:.1f}",
                    f"{all_peak:.0f}",
                    f"{everything / ours:.0f}x",
                    other,
                ]
            )
    note = f"(inputs generated in {generated:.0f} s, cached in benchmarks/.cache)"
    return f"### 2. Video sampling, PyAV, CPU {note}\n\n" + table(rows) + "\n\n" + frame_times(runs)


def frame_times(runs: int) -> str:
    """The cost of reading frame k as the k-th in presentation order (decord's frame k)."""
    rows = [
        [
            "10 min 720p, 15,000 frames",
            "constant rate (index)",
            "index check ms",
            "packet scan s",
            "read_frames 16 s",
            "read_frames 32 s",
        ]
    ]
    for name, path in (("constant rate", make_video(10)), ("variable rate", make_vfr_video(10))):
        outputs = [peak_rss_mib(FRAME_TIMES, path)[1].split() for _ in range(runs)]
        index_s = float(np.median([float(out[0]) for out in outputs]))
        scan_s = float(np.median([float(out[1]) for out in outputs]))
        rows.append(
            [
                name,
                outputs[0][2],
                f"{index_s * 1000:.0f}",
                f"{scan_s:.2f}",
                f"{measure(PROJECT, path, 16, runs)[0]:.2f}",
                f"{measure(PROJECT, path, 32, runs)[0]:.2f}",
            ]
        )
    return (
        "Frame k is the k-th frame in presentation order, as in the reference's decord. An mp4 "
        "or mov file's index is checked; only a file whose index is not at a constant rate has "
        "its packets scanned for their timestamps (demux only, no decoding), which "
        "read_frames then pays (webm, mkv and GIF files, with no frame count in the header, "
        "were always scanned to count their frames and now keep the timestamps too):\n\n"
        + table(rows)
    )


if __name__ == "__main__":
    print(run())
