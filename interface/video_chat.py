"""The Video chat tab and its `/video_chat` API endpoint."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel, ChatTab
from interface.conversation import history_to_turns, to_clip, user_turn, video_dict
from interface.history import History, restore_notice_box
from interface.i18n import localized
from interface.preferences import PreferenceStore
from interface.settings import build_settings
from interface.tab_helpers import ADD_A_VIDEO, question_text, show_examples
from model_backend.base import (
    MAX_FRAMES,
    MAX_TILES_PER_FRAME,
    Backend,
    GenerationSettings,
    VideoClip,
)
from model_backend.errors import InputError
from model_backend.media import DECODE_SLOTS, sample_video

VIDEO_TYPES = [".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def optional_seconds(value) -> float | None:
    """A start/end box: empty, None or 0 mean the video's own start/end.

    (Gradio's number box shows an unset value as 0, and an end at 0 s would be meaningless.)
    """
    if value is None or value == "" or float(value) == 0:
        return None
    return float(value)


def latest_video(turns: list[dict]) -> dict | None:
    return next((t["video"] for t in reversed(turns) if t.get("video")), None)


def collect_video_turn(
    message: dict,
    turns: list[dict],
    video: str | None,
    num_frames: float,
    start,
    end,
    tiles_per_frame: float,
) -> dict:
    """The question, with the video when it is new to the conversation or sampled differently.

    A follow-up about the same video with the same sampling carries no video: the model still
    sees the frames of the earlier turn (decoded once, cached).
    """
    text = question_text(message)
    attached = list(message.get("files") or [])
    if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in attached):
        raise InputError(
            "The video tab takes one video per message, not images: use the Image or "
            "Multi-image tab for pictures."
        )
    path = attached[-1] if attached else video
    if not path:
        if latest_video(turns):
            return user_turn(text)
        raise InputError(ADD_A_VIDEO)
    clip = video_dict(
        path, num_frames, optional_seconds(start), optional_seconds(end), tiles_per_frame
    )
    if clip == latest_video(turns):
        return user_turn(text)
    return user_turn(text, video=clip)


def frame_gallery(backend: Backend, clip: dict) -> list[tuple]:
    """The frames the model will see, captioned with their number and time."""
    frames, times = sample_video(to_clip(clip))
    pairs = enumerate(zip(frames, times, strict=True))
    return [(frame, f"#{i + 1} · {t:.1f} s") for i, (frame, t) in pairs]


def video_chat_turns(
    video: str | None, question: str, num_frames, start, end, tiles_per_frame, history=None
) -> list[dict]:
    """API: history + the question carrying the video."""
    if not video:
        raise InputError("video is required: pass a file with gradio_client.handle_file(path).")
    clip = video_dict(
        video, num_frames, optional_seconds(start), optional_seconds(end), tiles_per_frame
    )
    turns = history_to_turns(history)
    turns.append(user_turn((question or "").strip(), video=clip))
    return turns


def build_video_chat_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> History:
    """Video chat: sampled frames (shown), then questions about them."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            video = gr.Video(
                sources=["upload"], label=localized("Video"), elem_id="video-chat-video", height=260
            )
            with gr.Row():
                num_frames = gr.Slider(
                    4,
                    MAX_FRAMES,
                    VideoClip.num_frames,
                    step=1,
                    label=localized("Frames"),
                    elem_id="video-chat-frames",
                )
                tiles_per_frame = gr.Slider(
                    1,
                    MAX_TILES_PER_FRAME,
                    VideoClip.tiles_per_frame,
                    step=1,
                    label=localized("Tiles per frame"),
                    elem_id="video-chat-tiles",
                )
            with gr.Row():
                start = gr.Number(
                    0, label=localized("Start (s)"), minimum=0, elem_id="video-chat-start"
                )
                end = gr.Number(
                    0, label=localized("End (s, 0 = the end)"), minimum=0, elem_id="video-chat-end"
                )
            frames = gr.Gallery(
                label=localized("Frames the model sees"),
                columns=4,
                height=260,
                interactive=False,
                elem_id="video-chat-frames-gallery",
            )
            settings = build_settings(
                defaults, system_prompt, prefix="video-chat", show_max_tiles=False
            )
            history = History("video-chat")
        with gr.Column(scale=3, min_width=400):
            notice = restore_notice_box("video-chat")
            sampling = [video, num_frames, start, end, tiles_per_frame]
            tab = ChatTab(
                name="video-chat",
                collect_turn=collect_video_turn,
                placeholder=localized(
                    "**Video chat** · add a video (mp4, webm, mov, mkv, avi or GIF), check the "
                    "sampled frames, then ask about it."
                ),
                file_types=tuple(VIDEO_TYPES),
                media_inputs=tuple(sampling),
                cleared={video: None, frames: []},
            )
            panel = ChatPanel(backend, tab, model, concurrency_limit, feedback=feedback)
    show_examples("video_chat", panel.textbox, video)
    panel.wire(settings)
    history.wire(panel, notice)

    def show_frames(path, count, first, last, tiles):
        if not path:
            return []
        try:
            clip = video_dict(path, count, optional_seconds(first), optional_seconds(last), tiles)
            return frame_gallery(backend, clip)
        except InputError as error:
            gr.Warning(str(error))
            return []

    # Previews queue up (a few decodes at a time, as many as the backend decodes at once),
    # and a page asks for only its latest one: dragging the slider does not stack decodes.
    gr.on(
        [video.change, num_frames.release, start.submit, start.blur, end.submit, end.blur],
        show_frames,
        sampling,
        frames,
        concurrency_id="video-preview",
        concurrency_limit=DECODE_SLOTS.count,
        trigger_mode="always_last",
        api_visibility="private",
    )

    register_endpoint(
        "video_chat",
        backend,
        video_chat_turns,
        lambda: [
            gr.File(label="video", file_types=VIDEO_TYPES),
            gr.Textbox(label="question"),
            gr.Number(VideoClip.num_frames, label="num_frames"),
            gr.Number(None, label="start"),
            gr.Number(None, label="end"),
            gr.Number(VideoClip.tiles_per_frame, label="tiles_per_frame"),
        ],
        system_prompt,
        concurrency_limit,
        "Answer a question about a video clip with InternVL (what happens, in what order, "
        "what is shown when): it sees `num_frames` frames spread evenly between `start` and "
        "`end`; the answer streams.\n"
        "Args:\n"
        "    video: the video (an http(s) URL of the file, or a data: URL with it in base64; "
        "mp4, webm, mov, ...).\n"
        "    question: what to ask about the video.\n"
        "    num_frames: how many frames the model sees (more: finer in time, slower).\n"
        "    start: where the clip starts, in seconds (null: the beginning).\n"
        "    end: where the clip ends, in seconds (null: the end of the video).\n"
        "    tiles_per_frame: 448-pixel tiles per frame (more: finer detail, slower).\n"
        "Returns:\n"
        "    answer: the answer alone (text), after a notice if old turns were left out.",
    )
    return history
