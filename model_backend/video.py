"""Video input for InternVL: the reference's frame sampling and a seek-aware PyAV reader.

- `sample_frame_indices`: InternVL's `get_index`, number for number.
- `probe_video`: cheap facts about a file (frame count, fps, duration, size, rotation).
- `read_frames`: decodes only the sampled frames, upright and at a bounded size, with their
  stream timestamps. Frame k is the k-th frame in presentation order, as the reference's decord
  reads it, also in variable-frame-rate files (phone recordings).

Frame size is checked from the header before anything is decoded (a 100-byte GIF can declare a
16000x16000 canvas), and FFmpeg's own `max_pixels` guard refuses bigger frames met later on.

decord is deliberately not used: PyAV is the one backend, so there is one code path to test,
and the seeking below already keeps time and memory independent of the video's length.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
from PIL import Image

from model_backend.cancel import raise_if_cancelled
from model_backend.errors import InputError
from model_backend.images import check_size

__all__ = ["VideoInfo", "probe_video", "read_frames", "sample_frame_indices"]

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_DURATION_S = 3 * 3600
# Frames above 8K cinema size are refused: the decoder holds several full-size frames at once,
# so this bounds what one decode can take (about 140 MB a frame at the limit, as BGRA).
DEFAULT_MAX_PIXELS = 8192 * 4320
# Sampled frames are decoded straight to at most this many pixels (64 of them take 530 MB). The
# model's largest video grid (4 tiles of 448) has 0.8 MP, and full-HD frames come through as is.
DEFAULT_OUT_PIXELS = 1920 * 1080

# Decoding through a gap is cheaper than seeking until the gap is a couple of seconds (or a few
# keyframe intervals: a seek lands on the keyframe before the target, so a shorter hop re-decodes).
_SEEK_GAP_S = Fraction(2)
# A decode that ends this much before the stream's declared end means the file was cut short.
_TRUNCATION_SLACK_S = Fraction(1)

# PIL transposes that turn a stored picture into the displayed one, by clockwise display rotation.
_UPRIGHT = {
    90: Image.Transpose.ROTATE_270,  # PIL's ROTATE_* turn counter-clockwise
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video file, from `probe_video`.

    `width`/`height` are as displayed (the images `read_frames` returns have this size, scaled
    down to its `out_pixels` when larger).
    `rotation` is how far a player turns the stored picture clockwise (0, 90, 180 or 270);
    a phone video shot upright has 90.
    """

    total_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    rotation: int


@dataclass(frozen=True)
class _Probe:
    """`VideoInfo` plus the exact numbers the decoder needs."""

    info: VideoInfo
    fps: Fraction  # exact average rate: frame i of a constant-rate file starts at i / fps
    stream_end_s: Fraction | None  # the video stream's own declared end, when it has one
    # Every frame's pts (stream time base) in presentation order, from the packet timestamps;
    # None when not scanned (constant rate) or when some packet has no timestamp.
    frame_pts: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Frame sampling (pure)


def _fmt_s(seconds: float) -> str:
    """Seconds for a message: '1.2 s', or '5400 s (1:30:00)' for long videos."""
    text = f"{round(float(seconds), 2):g} s"
    if seconds >= 60:
        minutes, secs = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" ({hours}:{minutes:02d}:{secs:02d})" if hours else f" ({minutes}:{secs:02d})"
    return text


def _check_bound(start: float | None, end: float | None, duration_s: float) -> None:
    """Reject time ranges that cannot select anything; partial overlaps are clamped later."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"The {name} time must be a number of seconds, not {value}.")
    if start is not None and end is not None and start >= end:
        raise InputError(
            f"The start time ({_fmt_s(start)}) must be before the end time ({_fmt_s(end)}). "
            f"The video is {_fmt_s(duration_s)} long."
        )
    if start is not None and start >= duration_s:
        raise InputError(
            f"The start time ({_fmt_s(start)}) is past the end of the video, "
            f"which is {_fmt_s(duration_s)} long."
        )


def sample_frame_indices(
    total_frames: int,
    fps: float,
    num_segments: int,
    start: float | None = None,
    end: float | None = None,
) -> list[int]:
    """Pick `num_segments` frame indices, one from the middle of each equal segment.

    This is InternVL's reference `get_index` (same arithmetic, Python's banker's `round`), so
    the model sees the frames it was evaluated with. `start`/`end` are seconds; `None` means
    the video's start/end. A range that sticks out of the video is clamped, as the reference
    does; one that selects nothing raises `InputError`.
    """
    if num_segments < 1:
        raise InputError(f"The number of frames to sample must be at least 1, not {num_segments}.")
    if total_frames < 1:
        raise InputError("The video contains no frames.")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"The video's frame rate ({fps}) is unusable.")
    _check_bound(start, end, total_frames / fps)
    last = total_frames - 1
    start_idx = 0 if start is None else max(0, round(start * fps))
    end_idx = last if end is None else min(round(end * fps), last)
    if start_idx > end_idx:
        raise InputError(
            f"The time range {_fmt_s(start or 0)} to "
            f"{'the end' if end is None else _fmt_s(end)} lies outside the video, "
            f"which is {_fmt_s(total_frames / fps)} long."
        )
    seg = (end_idx - start_idx) / num_segments
    return [int(start_idx + seg / 2 + round(seg * k)) for k in range(num_segments)]


# ---------------------------------------------------------------------------------------------
# Opening and probing


@contextmanager
def _opened(path: str | os.PathLike[str], max_pixels: int) -> Iterator[av.container.InputContainer]:
    """Open `path` for reading; any FFmpeg failure inside the block becomes an InputError.

    Opening decodes a frame to learn the stream's parameters: `max_pixels` makes FFmpeg refuse
    one larger than the limit instead of allocating it.
    """
    name = Path(path).name
    if not Path(path).is_file():
        raise InputError(f"The video file {name!r} does not exist (was the upload interrupted?).")
    try:
        with av.open(str(path), mode="r", options={"max_pixels": str(max_pixels)}) as container:
            yield container
    except av.FFmpegError as e:
        # Broken headers, truncated data and non-video files all surface here.
        raise InputError(
            f"Could not read {name!r}: it is not a video file, or it is damaged or incomplete. "
            "Try re-saving it as an MP4 (H.264) file."
        ) from e


def _video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    """The first real video stream (cover art in audio files is a 'video' stream too)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    found = f"; it only contains {' and '.join(kinds)}" if kinds else ""
    raise InputError(f"{name!r} has no video stream{found}. Please upload a video.")


def _gif_canvas(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """A GIF's logical screen size from its first 10 bytes, or None for other files."""
    with open(path, "rb") as file:
        head = file.read(10)
    if head[:6] not in (b"GIF87a", b"GIF89a") or len(head) < 10:
        return None
    return struct.unpack("<HH", head[6:10])


def _header_size(path: str | os.PathLike[str], stream: av.VideoStream) -> tuple[int, int]:
    """The frame size the header declares, (0, 0) when unknown.

    FFmpeg forgets the size when its probe decode was refused for size (GIF, VP9, MJPEG), so a
    GIF's canvas is read from the file itself: that is the classic pixel bomb.
    """
    width, height = stream.codec_context.width, stream.codec_context.height
    if width and height:
        return width, height
    return _gif_canvas(path) or (0, 0)


def _limit_frame_size(
    path: str | os.PathLike[str], stream: av.VideoStream, max_pixels: int
) -> None:
    """Refuse a stream whose header declares frames over `max_pixels`, before any decoding;
    make the decoder refuse larger frames later in the stream too."""
    width, height = _header_size(path, stream)
    check_size(Path(path).name, width, height, max_pixels, kind="video")
    stream.codec_context.options = {"max_pixels": str(max_pixels)}


@contextmanager
def _opened_stream(
    path: str | os.PathLike[str], max_pixels: int
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The open container and its video stream, its frame size checked (see `_opened`)."""
    with _opened(path, max_pixels) as container:
        stream = _video_stream(container, Path(path).name)
        _limit_frame_size(path, stream, max_pixels)
        yield container, stream


def _clockwise(frame: av.VideoFrame) -> int:
    """The frame's display rotation, clockwise, snapped to 0/90/180/270.

    FFmpeg attaches the container's display matrix to each decoded frame; `frame.rotation`
    is its counter-clockwise angle (the classic 'rotate=90' tag reads as -90).
    """
    return (-round(frame.rotation / 90) * 90) % 360


def _scan(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    name: str,
    scan_all: bool,
    deadline: float | None = None,
) -> tuple[av.VideoFrame | None, list[int | None], Fraction | None]:
    """Decode the first frame; with `scan_all`, demux the rest without decoding.

    Returns (first frame or None, the pts of every video packet read in decoding order (None
    where a packet has none), end of the last packet in seconds from the stream start).
    Scanning demuxes only: no frame is decoded or held past the first.
    """
    first: av.VideoFrame | None = None
    pts: list[int | None] = []
    end_pts = None
    for packet in container.demux(stream):
        if first is None:
            try:
                decoded = packet.decode()
            except av.InvalidDataError:
                decoded = []  # a damaged packet; a later keyframe may still decode
            first = decoded[0] if decoded else None
        if packet.size:  # demux ends with an empty flush packet
            pts.append(packet.pts)
            if packet.pts is not None:
                packet_end = packet.pts + (packet.duration or 0)
                end_pts = packet_end if end_pts is None else max(end_pts, packet_end)
            if len(pts) % 1000 == 0:
                _check_time(deadline, name)
        if first is not None and not scan_all:
            break
    if end_pts is None:
        return first, pts, None
    return first, pts, (end_pts - (stream.start_time or 0)) * stream.time_base


def _presentation_order(pts: list[int | None]) -> np.ndarray | None:
    """The frames' pts in presentation order (the order a player shows them, and decord's frame
    order; packets come in decoding order), or None if some packet has no timestamp."""
    if not pts or None in pts:
        return None
    return np.sort(np.array(pts, np.int64))  # 8 bytes a frame: 3 hours at 30 fps is 2.6 MB


def _regular_index(stream: av.VideoStream) -> bool:
    """Whether the container's index (mp4 and mov read every frame's decoding time at opening)
    puts each frame k within a quarter frame of k / average rate. Then frame k is the frame
    nearest to that time, with no need to scan the packets for their timestamps."""
    rate, entries = stream.average_rate, stream.index_entries
    if not rate or stream.frames <= 0 or len(entries) != stream.frames:
        return False
    ticks = np.fromiter((entry.timestamp for entry in entries), np.int64, len(entries))
    step = float(1 / (rate * stream.time_base))  # time-base ticks per frame
    drift = ticks - ticks[0] - np.arange(len(ticks)) * step
    return bool(np.abs(drift).max() < step / 4)


def _probe_container(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    name: str,
    max_pixels: int,
    *,
    frame_times: bool = False,
    deadline: float | None = None,
) -> _Probe:
    """Probe an open container; reads only the first frame when the header has a frame count.

    With `frame_times`, the probe also has every frame's timestamp (demuxing only, no decoding)
    unless the container's index shows a constant rate (then frame k is at k / fps anyway).
    """
    header_frames = stream.frames  # 0 when the container does not say (webm, mkv, ...)
    # Packets are read to the end for a count (none in the header) or for the frame times.
    scan_all = header_frames <= 0 or (frame_times and not _regular_index(stream))
    try:
        first, pts, packets_end = _scan(container, stream, name, scan_all, deadline)
    except av.ArgumentError as error:
        if stream.codec_context.width:
            raise
        # No size in the header, and the decoder refused the first frame: most likely too big.
        raise InputError(
            f"Could not decode {name!r}: most likely its frames are larger than the limit of "
            f"{max_pixels:,} pixels (8K; please resize it), or the file is damaged."
        ) from error
    total = header_frames if header_frames > 0 else len(pts)
    if total <= 0:
        raise InputError(f"{name!r} has a video stream but no frames in it.")
    if first is None:
        raise InputError(f"Could not decode any frame of {name!r}: it is damaged or unsupported.")

    stream_end = stream.duration * stream.time_base if stream.duration else packets_end
    duration = stream_end
    if duration is None and container.duration:
        duration = Fraction(container.duration, av.time_base)
    if stream.average_rate:
        fps = Fraction(stream.average_rate)
    elif duration:
        fps = total / duration
    elif stream.guessed_rate:
        fps = Fraction(stream.guessed_rate)
    else:
        raise InputError(f"Could not tell the frame rate of {name!r}.")
    if not duration:
        duration = total / fps

    rotation = _clockwise(first)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    info = VideoInfo(total, float(fps), float(duration), width, height, rotation)
    frame_pts = _presentation_order(pts) if frame_times and scan_all else None
    return _Probe(info, fps, stream_end, frame_pts)


def probe_video(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Describe a video cheaply: header facts plus its first frame (for size and rotation).

    Without a frame count in the header (webm, mkv), packets are counted by demuxing only.
    Raises `InputError` for anything that is not a readable video, or whose frames have more
    than `max_pixels` pixels (checked from the header, before decoding).
    """
    with _opened_stream(path, max_pixels) as (container, stream):
        return _probe_container(container, stream, Path(path).name, max_pixels).info


# ---------------------------------------------------------------------------------------------
# Decoding the sampled frames


def _timed_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    seek_s: Fraction | None,
    fps: Fraction,
) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Yield (seconds since stream start, frame) in presentation order.

    With `seek_s`, first seek to the keyframe at or before it (PyAV flushes the decoder);
    with None, continue from where the container is.
    """
    origin, tb = stream.start_time or 0, stream.time_base
    if seek_s is not None:
        container.seek(origin + math.floor(seek_s / tb), stream=stream, backward=True)
    prev_t: Fraction | None = None
    for packet in container.demux(stream):
        for frame in packet.decode():
            if frame.pts is not None:
                t = (frame.pts - origin) * tb
            else:  # no timestamp (some raw streams): assume the nominal rate
                t = prev_t + 1 / fps if prev_t is not None else (seek_s or Fraction(0))
            prev_t = t
            yield t, frame


def bounded_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, to at most `max_pixels` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_width, new_height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    # A side rounded up to 1 pixel must not take the other past the budget.
    new_width = max(1, min(new_width, max_pixels // new_height))
    return new_width, max(1, min(new_height, max_pixels // new_width))


def _to_image(frame: av.VideoFrame, out_pixels: int) -> Image.Image:
    """RGB PIL image of the frame as a player shows it (display rotation applied), scaled down
    to `out_pixels` in the same pass as the colour conversion (no full-size RGB copy)."""
    size = bounded_size(frame.width, frame.height, out_pixels)
    if size == (frame.width, frame.height):
        image = frame.to_image()
    else:
        image = frame.to_image(width=size[0], height=size[1], interpolation="AREA")
    transpose = _UPRIGHT.get(_clockwise(frame))
    return image.transpose(transpose) if transpose is not None else image


def _check_not_truncated(
    last: tuple[Fraction, av.VideoFrame], stream: av.VideoStream, probe: _Probe, name: str
) -> None:
    """Raise if the decodable data stops well before the stream's declared end."""
    if probe.stream_end_s is None:
        return  # nothing to compare with (only the container's duration, which may be audio's)
    t, frame = last
    frame_len = frame.duration * stream.time_base if frame.duration else 1 / probe.fps
    if probe.stream_end_s - (t + frame_len) > max(_TRUNCATION_SLACK_S, 3 / probe.fps):
        raise InputError(
            f"{name!r} seems to be incomplete: its video stops at {_fmt_s(t + frame_len)} "
            f"but should last {_fmt_s(probe.stream_end_s)}. Please upload the whole file."
        )


# Memory is bounded by the frame-size limit; time is bounded here: a small GIF of many frames on
# a large canvas can take hours to decode while holding one of the decoding slots.
MAX_DECODE_S = 60


def _check_time(deadline: float | None, name: str) -> None:
    """Stop if the request has gone (a closed page, a cancelled job) or the time is up."""
    raise_if_cancelled()
    if deadline is not None and time.monotonic() > deadline:
        raise InputError(
            f"{name!r} takes too long to decode (over {MAX_DECODE_S} s for the frames "
            f"asked for): choose fewer frames, a shorter range, or a smaller video."
        )


_Timed = tuple[Fraction, av.VideoFrame]
T = TypeVar("T")


def nearest(
    target: Fraction, before: tuple[Fraction, T] | None, after: tuple[Fraction, T]
) -> tuple[Fraction, T]:
    """Of the last frame before `target` and the first at or after it, as (time, frame), the
    one shown nearest to `target`; the earlier on a tie."""
    if before is not None and target - before[0] <= after[0] - target:
        return before
    return after


class _Reader:
    """A stream's frames in presentation order, read forward and seeking ahead when a target is
    far enough that seeking beats decoding through the gap."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        fps: Fraction,
        name: str,
        deadline: float,
    ):
        self.container, self.stream, self.fps = container, stream, fps
        self.name, self.deadline = name, deadline
        self.can_seek = True  # turned off if a seek ever lands past its target (a lying index)
        self.key_gap = Fraction(0)  # longest keyframe interval seen
        self._start(None)  # a fresh container is at the start

    def _start(self, seek_s: Fraction | None) -> None:
        """Read from the keyframe at or before `seek_s` (None: from where the container is)."""
        self.frames = _timed_frames(self.container, self.stream, seek_s, self.fps)
        self.seek_s = seek_s
        self.before: _Timed | None = None  # the last two frames read, the later in `at`
        self.at: _Timed | None = None
        self.last_key: Fraction | None = None  # the last keyframe since the seek
        self.ended = False

    def around(self, target: Fraction) -> tuple[_Timed | None, _Timed | None]:
        """(the last frame before `target`, the first at or after it); the second is None past
        the end of the stream. Targets must come in ascending order."""
        if self.ended:
            return self.at, None
        pos = self.at[0] if self.at else self.seek_s or Fraction(0)  # where reading stands
        if self.can_seek and target - pos > max(_SEEK_GAP_S, 2 * self.key_gap):
            self._start(target - 1 / self.fps)  # from a frame before: the nearest may be it
        while self.at is None or self.at[0] < target:
            _check_time(self.deadline, self.name)
            item = next(self.frames, None)
            if item is None and self.at is None and self.seek_s:
                self._from_start()  # the seek went past the data
                continue
            if item is None:
                self.ended = True
                return self.at, None
            t, frame = item
            if self.at is None and self.seek_s and t > target:
                self._from_start()  # the index sent us past the target
                continue
            if frame.key_frame:
                if self.last_key is not None:
                    self.key_gap = max(self.key_gap, t - self.last_key)
                self.last_key = t
            self.before, self.at = self.at, item
        return self.before, self.at

    def _from_start(self) -> None:
        """Read from the start, never seeking again (slow, but right)."""
        self.can_seek = False
        self._start(Fraction(0))


def _decode_wanted(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: list[int],
    probe: _Probe,
    name: str,
    out_pixels: int,
    deadline: float,
) -> dict[int, tuple[Fraction, Image.Image]]:
    """Decode just enough of the stream to return frame `i` for each sorted, unique `i`.

    Frame i is the i-th frame in presentation order, as in the reference's decord: the frame at
    the i-th of the probe's `frame_pts`. Without those (a constant rate, or a packet without
    timestamp) it is the frame nearest to i / fps, the same frame in a constant-rate file.
    Only the chosen frames (as images) and two decoded frames are held.
    """
    frame_pts, origin = probe.frame_pts, stream.start_time or 0
    picked: dict[int, tuple[Fraction, Image.Image]] = {}
    shown: tuple[av.VideoFrame, tuple[Fraction, Image.Image]] | None = None
    reader = _Reader(container, stream, probe.fps, name, deadline)
    for i in wanted:
        if frame_pts is not None and i < len(frame_pts):
            target = (int(frame_pts[i]) - origin) * stream.time_base
        else:
            target = Fraction(i) / probe.fps
        before, after = reader.around(target)
        if after is None:  # past the last frame: the last frame
            if before is None:
                raise InputError(f"Could not decode any frame of {name!r}.")
            _check_not_truncated(before, stream, probe, name)
            choice = before
        else:
            choice = nearest(target, before, after)
        if shown is None or shown[0] is not choice[1]:  # targets may share a frame: convert once
            shown = (choice[1], (choice[0], _to_image(choice[1], out_pixels)))
        picked[i] = shown[1]
    return picked


def read_frames(
    path: str | os.PathLike[str],
    num_segments: int,
    start: float | None = None,
    end: float | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    out_pixels: int = DEFAULT_OUT_PIXELS,
) -> tuple[list[Image.Image], list[float]]:
    """Read the `num_segments` frames InternVL's reference would sample from a video.

    Returns RGB PIL images, upright as a player shows them and scaled down (aspect ratio kept)
    to at most `out_pixels` pixels, and each frame's timestamp in seconds from the
    stream's start (its pts, not index / fps). The same index sampled twice gives the same
    image object, decoded once. `start`/`end` bound the sampling in seconds. Raises
    `InputError` for any problem with the file or the arguments, and for frames of more than
    `max_pixels` pixels (from the header, before decoding).
    """
    name = Path(path).name
    if num_segments < 1:
        raise InputError(f"The number of frames to sample must be at least 1, not {num_segments}.")
    if Path(path).is_file() and (size := os.path.getsize(path)) > max_bytes:
        raise InputError(
            f"{name!r} is {size / 1024**2:.0f} MiB; videos may be at most "
            f"{max_bytes / 1024**2:.0f} MiB. Please trim or compress it."
        )
    with _opened_stream(path, max_pixels) as (container, stream):
        deadline = time.monotonic() + MAX_DECODE_S
        probe = _probe_container(
            container, stream, name, max_pixels, frame_times=True, deadline=deadline
        )
    info = probe.info
    if info.duration_s > max_duration_s:
        raise InputError(
            f"{name!r} is {_fmt_s(info.duration_s)} long; videos may be at most "
            f"{_fmt_s(max_duration_s)}. Please trim it or choose a time range in a shorter clip."
        )
    _check_bound(start, end, info.duration_s)  # here, to name the container's real duration
    indices = sample_frame_indices(info.total_frames, info.fps, num_segments, start, end)
    with _opened_stream(path, max_pixels) as (container, stream):
        stream.thread_type = "AUTO"  # frame threads: several times faster on large videos
        wanted = sorted(set(indices))
        picked = _decode_wanted(container, stream, wanted, probe, name, out_pixels, deadline)
    return [picked[i][1] for i in indices], [float(picked[i][0]) for i in indices]
