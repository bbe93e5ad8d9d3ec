"""Tests for model_backend.video: reference sampling parity and exact, upright frame decoding.

Every video is generated here with PyAV; each frame carries its own number as a pattern of
big black/white squares, which survives lossy codecs, so a test can tell which frame came back.
"""

from __future__ import annotations

import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from model_backend import video
from model_backend.errors import InputError
from model_backend.video import probe_video, read_frames, sample_frame_indices
from tests.conftest import EXAMPLES
from tests.media_files import X264, pattern, read_number, write_gif_bomb, write_video

# ---------------------------------------------------------------------------------------------
# Helpers: the reference formula, frame-number patterns, writing videos


def reference_get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    """InternVL's reference get_index, kept in its own style. Also says if the range is empty."""
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    frame_indices = np.array(
        [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)]
    )
    return frame_indices, start_idx > end_idx


def all_frames(path: Path) -> list[tuple[float, int]]:
    """(pts in seconds, frame number) of every frame, decoded the plain way, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return [
            (float((f.pts - origin) * stream.time_base), read_number(f.to_ndarray(format="rgb24")))
            for f in container.decode(stream)
        ]


# ---------------------------------------------------------------------------------------------
# Sampling


def test_index_parity_with_reference():
    rng = random.Random(20250101)
    fps_choices = [25.0, 24.0, 30.0, 60.0, 30000 / 1001, 24000 / 1001, 12.5, 6.25, 1.0]
    checked = empty = 0
    for _ in range(400):
        total = rng.choice([1, 2, 3, rng.randint(4, 60), rng.randint(60, 5000)])
        fps = rng.choice([*fps_choices, rng.uniform(0.5, 120.0)])
        segments = rng.choice([1, 2, 3, 8, 16, 32, rng.randint(1, 64)])
        duration = total / fps
        bound = None
        if rng.random() < 0.7:
            start = rng.choice([None, 0.0, rng.uniform(-1.0, duration * 1.1)])
            end = rng.choice([None, rng.uniform(0.0, duration * 1.5)])
            if start is not None and end is not None and start >= end:
                start, end = end, start + 0.5  # the reference does not handle start >= end
            bound = (start, end)
        ref_bound = None
        if bound is not None:
            ref_bound = (
                -100000 if bound[0] is None else bound[0],
                100000 if bound[1] is None else bound[1],
            )
        expected, outside = reference_get_index(ref_bound, fps, total - 1, num_segments=segments)
        if outside:  # a range with no frame in it: the reference would index past the video
            with pytest.raises(InputError):
                sample_frame_indices(total, fps, segments, *(bound or (None, None)))
            empty += 1
            continue
        got = sample_frame_indices(total, fps, segments, *(bound or (None, None)))
        assert got == expected.tolist(), (total, fps, segments, bound)
        assert all(0 <= i < total for i in got)
        checked += 1
    assert checked >= 300 and empty >= 1


def test_sample_frame_indices_uses_bankers_rounding():
    # seg = 4.5: round(4.5) == 4, so the second index is int(2.25 + 4) = 6, not 7.
    assert sample_frame_indices(10, 1.0, 2) == [2, 6]
    assert sample_frame_indices(1, 25.0, 4) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((30, 25.0, 0), "at least 1"),
        ((0, 25.0, 4), "no frames"),
        ((30, 0.0, 4), "frame rate"),
        ((30, 25.0, 4, 0.8, 0.8), "before the end"),
        ((30, 25.0, 4, 2.0, 3.0), "past the end"),
        ((30, 25.0, 4, 1.19, None), r"1\.19 s to the end lies outside.*1\.2 s long"),
        ((30, 25.0, 4, float("nan"), None), "number of seconds"),
    ],
)
def test_sample_frame_indices_rejects_degenerate_input(args, needle):
    with pytest.raises(InputError, match=needle):
        sample_frame_indices(*args)


# ---------------------------------------------------------------------------------------------
# Decoding

VP9 = {"deadline": "realtime", "cpu-used": "8", "g": "8"}


def _cfr_cases():
    return [
        pytest.param("h264_25.mp4", "libx264", 25, "yuv420p", X264, id="h264-25fps"),
        pytest.param(
            "h264_2997.mp4", "libx264", Fraction(30000, 1001), "yuv420p", X264, id="h264-29.97"
        ),
        pytest.param("vp9.webm", "libvpx-vp9", 25, "yuv420p", VP9, id="vp9-webm"),
        pytest.param("mjpeg.avi", "mjpeg", 25, "yuvj420p", None, id="mjpeg-avi"),
        pytest.param("anim.gif", "gif", 10, "rgb8", None, id="gif"),
    ]


@pytest.mark.parametrize(("name", "codec", "rate", "pix_fmt", "options"), _cfr_cases())
def test_constant_rate_files_give_exact_frames(tmp_path, name, codec, rate, pix_fmt, options):
    n = 40
    path = write_video(tmp_path / name, codec, rate, n, pix_fmt=pix_fmt, options=options)
    info = probe_video(path)
    assert (info.total_frames, info.width, info.height, info.rotation) == (n, 64, 48, 0)
    assert info.fps == pytest.approx(float(rate))
    assert info.duration_s == pytest.approx(n / float(rate), abs=0.05)
    truth = dict((number, t) for t, number in all_frames(path))
    assert sorted(truth) == list(range(n))

    for segments, start, end in [(8, None, None), (5, 0.3, 1.0), (60, None, None), (3, 0.5, None)]:
        images, times = read_frames(path, segments, start, end)
        indices = sample_frame_indices(n, info.fps, segments, start, end)
        assert [read_number(im) for im in images] == indices  # exactly frame i for index i
        assert times == pytest.approx([truth[i] for i in indices], abs=1e-9)  # from pts
        assert all(im.mode == "RGB" and im.size == (64, 48) for im in images)


# A phone's variable frame rate: durations in ms, long pauses and bursts (18 frames, 2.1 s)
VFR_MS = [40, 40, 200, 40, 40, 400, 40, 80, 40, 40, 160, 40, 40, 40, 600, 40, 40, 40]


def _vfr_pts(durations: list[int]) -> list[int]:
    return [sum(durations[:i]) for i in range(len(durations))]


def _check_kth_frames(path: Path, segment_counts, **options):
    """Frame i of the reference's sampling is the i-th frame in presentation order (decord's
    frame i), and its timestamp is that frame's own pts."""
    frames = all_frames(path)  # (pts time, number) in presentation order
    assert [number for _, number in frames] == list(range(len(frames)))
    info = probe_video(path)
    assert info.total_frames == len(frames)
    for segments in segment_counts:
        images, times = read_frames(path, segments, **options)
        indices = sample_frame_indices(info.total_frames, info.fps, segments, **options)
        assert [read_number(im) for im in images] == indices
        assert times == pytest.approx([frames[i][0] for i in indices], abs=1e-9)


@pytest.mark.parametrize(
    ("name", "codec", "time_base"),
    [
        ("vfr.mp4", "libx264", Fraction(1, 1000)),
        ("vfr.mkv", "libx264", Fraction(1, 1000)),
        ("vfr.webm", "libvpx-vp9", Fraction(1, 1000)),
    ],
)
def test_variable_frame_rate_gives_the_kth_frame_like_the_reference(
    tmp_path, name, codec, time_base
):
    # The frames nearest to i / average fps would be 3, 6, 11, 15 for 4 segments, not 2, 6, 10, 15.
    options = VP9 if codec == "libvpx-vp9" else X264
    pts = _vfr_pts(VFR_MS)
    path = write_video(
        tmp_path / name, codec, 25, len(pts), pts=pts, time_base=time_base, options=options
    )
    assert [t for t, _ in all_frames(path)] == pytest.approx([p / 1000 for p in pts])
    _check_kth_frames(path, (4, 8, 16, 40))
    _check_kth_frames(path, (3, 5), start=0.5, end=1.5)


def test_dropped_frames_on_a_constant_grid_give_the_kth_frame(tmp_path):
    # A webcam that drops frames: timestamps on the 25 fps grid with holes. A frame is shown at
    # every i / fps nearby, but it is not frame i.
    pts = [40 * t for t in range(120) if t % 7 not in (3, 4)]
    path = write_video(
        tmp_path / "drops.mp4", "libx264", 25, len(pts), pts=pts, time_base=Fraction(1, 1000)
    )
    _check_kth_frames(path, (5, 16))


def test_long_variable_rate_video_seeks_to_the_kth_frame(tmp_path, monkeypatch):
    rng = random.Random(7)
    durations = [rng.choice([40, 40, 40, 80, 120, 240]) for _ in range(600)]  # ~45 s
    path = write_video(
        tmp_path / "long_vfr.mp4",
        "libx264",
        25,
        len(durations),
        pts=_vfr_pts(durations),
        time_base=Fraction(1, 1000),
        options={"g": "25"},
        make_frame=lambda n: pattern(n, 80, 64),
    )
    decoded = 0
    original = video._timed_frames

    def counting(*args, **kwargs):
        nonlocal decoded
        for item in original(*args, **kwargs):
            decoded += 1
            yield item

    monkeypatch.setattr(video, "_timed_frames", counting)
    _check_kth_frames(path, (8,))
    assert decoded < 600 // 2  # it seeked rather than decoding everything


def test_gif_with_irregular_delays(tmp_path):
    delays_cs = [10, 10, 30, 10, 50, 10, 10, 20, 10, 10, 40, 10]
    pts = [sum(delays_cs[:i]) for i in range(len(delays_cs))]
    path = write_video(
        tmp_path / "vfr.gif",
        "gif",
        100,
        len(pts),
        pix_fmt="rgb8",
        pts=pts,
        time_base=Fraction(1, 100),
    )
    assert [t for t, _ in all_frames(path)] == pytest.approx([p / 100 for p in pts])
    _check_kth_frames(path, (6, 12))


def test_constant_rate_mp4_is_not_scanned_and_variable_rate_mp4_is(tmp_path, monkeypatch):
    # The packet scan reads the whole file; an mp4's index already says when the rate is
    # constant (figures in benchmarks/RESULTS.md, video section).
    scans = []
    original = video._scan

    def spy(container, stream, name, scan_all, deadline=None):
        scans.append(scan_all)
        return original(container, stream, name, scan_all, deadline)

    monkeypatch.setattr(video, "_scan", spy)
    cfr = write_video(tmp_path / "cfr.mp4", "libx264", 25, 40, options=X264)
    read_frames(cfr, 8)
    assert scans == [False]  # the probe decoded the first frame and read no further
    scans.clear()
    pts = _vfr_pts(VFR_MS)
    vfr = write_video(
        tmp_path / "vfr.mp4", "libx264", 25, len(pts), pts=pts, time_base=Fraction(1, 1000)
    )
    read_frames(vfr, 8)
    assert True in scans


@pytest.mark.parametrize(
    ("target", "before", "after", "expected"),
    [
        (Fraction(5), None, (Fraction(7), "b"), "b"),  # nothing before: the first frame
        (Fraction(5), (Fraction(4), "a"), (Fraction(7), "b"), "a"),
        (Fraction(6), (Fraction(4), "a"), (Fraction(7), "b"), "b"),
        (Fraction(11, 2), (Fraction(4), "a"), (Fraction(7), "b"), "a"),  # a tie: the earlier
        (Fraction(7), (Fraction(4), "a"), (Fraction(7), "b"), "b"),  # exactly on a frame
    ],
)
def test_nearest_frame_choice(target, before, after, expected):
    assert video.nearest(target, before, after)[1] == expected


def _upright(n: int) -> np.ndarray:
    """A 48x64 (w x h) portrait picture: red top half, frame number in the bottom half."""
    red = np.zeros((32, 48, 3), np.uint8)
    red[:, :, 0] = 255
    return np.concatenate([red, pattern(n, 48, 32)], axis=0)


def _tkhd_matrix(path: Path) -> tuple[int, ...]:
    """The video track's display matrix as written in the mp4 (version-0 tkhd box)."""
    data = path.read_bytes()
    body = data[data.index(b"tkhd") + 4 :]
    assert body[0] == 0
    offset = 4 + 20 + 8 + 2 + 2 + 2 + 2  # flags, times/ids/duration, reserved, layer..volume
    return struct.unpack(">9i", body[offset : offset + 36])


@pytest.mark.parametrize("ccw_degrees", [-90, 90, 180])
def test_rotation_metadata_gives_upright_frames(tmp_path, ccw_degrees):
    # The player turns the stored picture counter-clockwise by ccw_degrees, so store the
    # upright picture turned the other way; read_frames must undo it.
    turns = -ccw_degrees // 90  # np.rot90 turns counter-clockwise for positive k

    def stored(n: int) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(_upright(n), k=turns))

    path = write_video(
        tmp_path / "rot.mp4", "libx264", 25, 20, display_rotation=ccw_degrees, make_frame=stored
    )
    if ccw_degrees == -90:
        # What phones write for portrait video ("rotate=90"): [0 1 0; -1 0 0; 0 0 1] in 16.16.
        assert _tkhd_matrix(path)[:5] == (0, 65536, 0, -65536, 0)
    info = probe_video(path)
    assert info.rotation == (-ccw_degrees) % 360
    assert (info.width, info.height) == (48, 64)
    images, _ = read_frames(path, 5)
    for image, index in zip(images, sample_frame_indices(20, 25.0, 5), strict=True):
        pixels = np.asarray(image)
        assert image.size == (48, 64)
        top = pixels[:32].reshape(-1, 3).mean(axis=0)
        assert top[0] > 200 and top[1] < 60 and top[2] < 60, top  # red on top
        assert read_number(pixels[32:]) == index


def test_single_frame_video(tmp_path):
    path = write_video(tmp_path / "one.mp4", "libx264", 25, 1, make_frame=lambda i: pattern(5))
    info = probe_video(path)
    assert info.total_frames == 1
    images, times = read_frames(path, 4)
    assert [read_number(im) for im in images] == [5, 5, 5, 5]
    assert all(im is images[0] for im in images)  # decoded and converted once
    assert times == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [("long.mp4", "libx264", {"g": "25"}), ("long.webm", "libvpx-vp9", {**VP9, "g": "25"})],
)
def test_long_video_decodes_only_near_sampled_frames(tmp_path, monkeypatch, name, codec, options):
    n = 400  # 16 s at 25 fps, a keyframe every second
    path = write_video(tmp_path / name, codec, 25, n, options=options)
    decoded = 0
    original = video._timed_frames

    def counting(*args, **kwargs):
        nonlocal decoded
        for item in original(*args, **kwargs):
            decoded += 1
            yield item

    monkeypatch.setattr(video, "_timed_frames", counting)
    images, _ = read_frames(path, 4)
    assert [read_number(im) for im in images] == sample_frame_indices(n, 25.0, 4)
    assert decoded < n // 3  # seeks skipped most of the video

    decoded = 0
    images, _ = read_frames(path, 3, 13.0, 15.0)  # a range near the end: one seek, then forward
    assert [read_number(im) for im in images] == sample_frame_indices(n, 25.0, 3, 13.0, 15.0)
    assert decoded < 60


def test_seek_past_target_falls_back_to_reading_from_start(tmp_path, monkeypatch):
    # Simulate a lying index: every real seek lands well after where it was asked to.
    n = 200
    path = write_video(tmp_path / "v.mp4", "libx264", 25, n, options={"g": "25"})
    original = video._timed_frames
    seeks = []

    def overshooting(container, stream, seek_s, fps):
        seeks.append(seek_s)
        return original(container, stream, seek_s + 3 if seek_s else seek_s, fps)

    monkeypatch.setattr(video, "_timed_frames", overshooting)
    images, _ = read_frames(path, 3)
    assert [read_number(im) for im in images] == sample_frame_indices(n, 25.0, 3)
    assert seeks[-1] == 0  # it gave up seeking and read from the start


# ---------------------------------------------------------------------------------------------
# Bad input


def test_text_file_renamed_to_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match=r"notes\.mp4"):
        read_frames(path, 8)
    with pytest.raises(InputError, match="not a video"):
        probe_video(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_frames(tmp_path / "gone.mp4", 8)


def _noise(i: int) -> np.ndarray:
    """Incompressible frames, so half a file holds about half of the frames."""
    return np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("faststart", [False, True], ids=["index-at-end", "index-at-start"])
def test_truncated_mp4(tmp_path, faststart):
    options = {"movflags": "faststart"} if faststart else None
    full = write_video(
        tmp_path / "full.mp4", "libx264", 25, 100, make_frame=_noise, container_options=options
    )
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mp4") as excinfo:
        read_frames(cut, 8)
    assert "incomplete" in str(excinfo.value) or "damaged" in str(excinfo.value)


def test_audio_only_file(tmp_path):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(10):
            samples = np.sin(np.arange(1024, dtype=np.float32) / 10)[None, :] * 0.1
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(InputError, match=r"no video stream.*audio"):
        read_frames(path, 8)
    with pytest.raises(InputError, match="no video stream"):
        probe_video(path)


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "small.mp4", "libx264", 25, 30, options=X264)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start": 0.8, "end": 0.8}, r"before the end.*1\.2 s long"),
        ({"start": 0.9, "end": 0.2}, r"before the end.*1\.2 s long"),
        ({"start": 5.0, "end": 9.0}, r"past the end.*1\.2 s long"),
        ({"start": 1.2}, r"past the end.*1\.2 s long"),
        ({"start": 1.19}, r"outside the video.*1\.2 s long"),
        ({"num_segments": 0}, "at least 1"),
        ({"max_bytes": 100}, "MiB"),
        ({"max_duration_s": 1.0}, r"1\.2 s long; videos may be at most 1 s"),
    ],
)
def test_bad_arguments(small_mp4, kwargs, needle):
    kwargs = {"num_segments": 8, **kwargs}
    with pytest.raises(InputError, match=needle):
        read_frames(small_mp4, **kwargs)


def test_range_partly_outside_is_clamped_like_the_reference(small_mp4):
    images, _ = read_frames(small_mp4, 4, start=1.0, end=60.0)
    assert [read_number(im) for im in images] == sample_frame_indices(30, 25.0, 4, 1.0, 60.0)


# ---------------------------------------------------------------------------------------------
# Frame size: checked from the header before decoding, and frames decoded to a bounded size


def test_default_limits_take_8k_video_and_refuse_a_gif_canvas_above_it(tmp_path):
    bomb = write_gif_bomb(tmp_path / "wide.gif", 6000, 6000, 4)  # 36 MP canvas, 112 bytes
    for read in (probe_video, lambda path: read_frames(path, 4)):
        with pytest.raises(InputError, match=r"wide\.gif is 6000x6000 .* limit is 35,389,440"):
            read(bomb)
    assert video.DEFAULT_MAX_PIXELS >= 7680 * 4320  # 8K phone video is taken


def _small_videos(tmp_path: Path) -> list[Path]:
    return [
        write_video(tmp_path / "h264.mp4", "libx264", 25, 8, options=X264),
        write_video(tmp_path / "h264.mkv", "libx264", 25, 8, options=X264),
        write_video(tmp_path / "vp9.webm", "libvpx-vp9", 25, 8, options=VP9),
        write_video(tmp_path / "mjpeg.avi", "mjpeg", 25, 8, pix_fmt="yuvj420p"),
        write_video(tmp_path / "anim.gif", "gif", 10, 8, pix_fmt="rgb8"),
    ]


def test_frames_over_the_limit_are_refused_in_every_container(tmp_path, monkeypatch):
    # FFmpeg forgets the size of a stream whose probe frame it refused (GIF, VP9, MJPEG): the
    # refusal still says why, and no frame is converted.
    converted = []
    monkeypatch.setattr(video, "_to_image", lambda *args: converted.append(args))
    for path in _small_videos(tmp_path):
        for read in (probe_video, lambda p, **limits: read_frames(p, 4, **limits)):
            with pytest.raises(InputError, match=r"limit (of|is) 3,071 pixels"):
                read(path, max_pixels=64 * 48 - 1)
        assert probe_video(path, max_pixels=64 * 48).width == 64  # exactly at the limit: fine
    assert converted == []


def test_bounded_size_keeps_the_aspect_ratio():
    assert video.bounded_size(1920, 1080, 1920 * 1080) == (1920, 1080)
    assert video.bounded_size(3840, 2160, 1920 * 1080) == (1920, 1080)
    assert video.bounded_size(16000, 16000, 1920 * 1080) == (1440, 1440)
    assert video.bounded_size(7000, 3, 1000) == (1000, 1)  # never 0 pixels a side
    assert video.bounded_size(3, 7000, 1000) == (1, 1000)


def _big_upright(n: int) -> np.ndarray:
    """A 1600x2400 (w x h) portrait picture: red top half, blue bottom half."""
    picture = np.zeros((2400, 1600, 3), np.uint8)
    picture[:1200, :, 0] = 255
    picture[1200:, :, 2] = 255
    return picture


def test_large_frames_are_decoded_straight_to_a_bounded_size(tmp_path):
    # A phone's portrait video: stored 2400x1600 and turned by the player. The frames come back
    # upright, at full-HD's pixel count at most, with the aspect ratio kept.
    path = write_video(
        tmp_path / "portrait.mp4",
        "libx264",
        25,
        3,
        display_rotation=-90,
        options={"preset": "ultrafast"},
        make_frame=lambda n: np.ascontiguousarray(np.rot90(_big_upright(n), k=1)),
    )
    info = probe_video(path)
    assert (info.width, info.height) == (1600, 2400)  # the video's own size
    images, _ = read_frames(path, 3)
    for image in images:
        width, height = image.size
        assert width * height <= 1920 * 1080  # video.DEFAULT_OUT_PIXELS
        assert abs(width / height - 1600 / 2400) < 0.01
        pixels = np.asarray(image, np.float32)
        assert pixels[: height // 2 - 8, :, 0].mean() > 200  # red on top
        assert pixels[height // 2 + 8 :, :, 2].mean() > 200  # blue below
    gif = write_gif_bomb(tmp_path / "canvas.gif", 4000, 2000, 3)  # under the limit, but large
    images, _ = read_frames(gif, 3)
    assert {image.size for image in images} == {video.bounded_size(4000, 2000, 1920 * 1080)}


def test_decoding_has_a_deadline_and_stops_when_the_request_is_cancelled(monkeypatch):
    """A small GIF of many frames on a large canvas took minutes to decode, uncancellable."""
    import threading

    from model_backend.base import RequestCancelled, cancellable

    clip = str(EXAMPLES / "bouncing_ball.mp4")
    gone = threading.Event()
    gone.set()
    with cancellable(gone), pytest.raises(RequestCancelled):
        video.read_frames(clip, 8)
    monkeypatch.setattr(video, "MAX_DECODE_S", -1)
    with pytest.raises(InputError, match="takes too long to decode"):
        video.read_frames(clip, 8)
