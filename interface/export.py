"""Chat export: the conversation, with its images and settings, as JSON and as Markdown.

Both files are self-contained (images embedded as base64), so nothing is lost when the page
closes. Videos are referred to by name with how they were sampled. Exports are written when
asked for, inside Gradio's own temp folder (so Gradio serves them without a second copy),
in a folder of this process that never holds more than EXPORT_BUDGET_BYTES and is removed at
exit (`exit_on_signals` makes SIGTERM and SIGINT exits too).
"""

from __future__ import annotations

import atexit
import base64
import json
import mimetypes
import shutil
import signal
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

from gradio.utils import get_upload_folder

from interface.conversation import ANSWER_FIELDS, reply_of
from model_backend.errors import InputError
from model_backend.thinking import answer_alone

# All exports kept at once; older ones are deleted to make room for a new one.
EXPORT_BUDGET_BYTES = 512 * 2**20
_WRITING = threading.Lock()  # one export at a time, so the budget holds


def export_dir() -> Path:
    """This process's own folder for exports (private, removed at exit), in Gradio's."""
    return _export_dir(get_upload_folder())


@lru_cache
def _export_dir(gradio_folder: str) -> Path:
    Path(gradio_folder).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="internvl-demo-exports-", dir=gradio_folder))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def exit_on_signals() -> None:
    """Let SIGTERM (docker stop, systemd, a Space restarting) and SIGINT end the app as Ctrl+C
    does, so that the exit handlers removing its temp files run: by default SIGTERM ends the
    process at once, and a process started in the background ignores SIGINT. Call it from
    the main thread, before launching."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def make_room(needed: int) -> None:
    """Delete the oldest exports until `needed` more bytes fit in EXPORT_BUDGET_BYTES; refuse
    an export that would not fit on its own."""
    if needed > EXPORT_BUDGET_BYTES:
        raise InputError(
            f"This conversation is too large to export: about {needed / 2**20:,.0f} MB with its "
            f"images, and exports may take {EXPORT_BUDGET_BYTES / 2**20:,.0f} MB."
        )
    exports = sorted(export_dir().iterdir(), key=lambda path: path.stat().st_mtime)
    sizes = {path: folder_bytes(path) for path in exports}
    total = sum(sizes.values())
    for path in exports:
        if total + needed <= EXPORT_BUDGET_BYTES:
            break
        shutil.rmtree(path, ignore_errors=True)
        total -= sizes[path]


def export_size_estimate(turns: list[dict]) -> int:
    """Bytes of the two files: each embeds every image in base64 (4/3 of the file)."""
    images = sum(Path(p).stat().st_size for turn in turns for p in turn.get("images") or ())
    answers = [*turns, *(other for turn in turns for other in turn.get("alternatives") or ())]
    text = sum(len(answer["text"].encode()) for answer in answers)
    return 2 * (images * 4 // 3 + text) + 4096


def embedded(path: str) -> str:
    """A file as a data URL."""
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def answer_record(answer: dict, keys: tuple[str, ...]) -> dict:
    """An answer (or an alternative) as plain data: its "text" is the answer alone, its
    thinking (if any) is "thinking", with "thinking_seconds"."""
    reply = reply_of(answer)
    item = {"text": answer_alone(answer["text"], reply)}  # no empty "<think></think>"
    if reply.thinking is not None:
        item = {"text": reply.answer, "thinking": reply.thinking}
    return item | {key: answer[key] for key in keys if answer.get(key)}


def export_record(turns: list[dict], model: str, settings: dict) -> dict:
    """The conversation as plain data: every turn, its media, and the settings used. `model` is
    the session's model at export; an answer that records its own "model" keeps it. An answer
    keeps its "feedback" ("like" or "dislike") and, after Regenerate, its "alternatives" (the
    answers not in use, each with its "number"; the answer in use has its own "number"). A
    thinking model's answer has its thinking apart, in "thinking"."""
    record_turns = []
    for turn in turns:
        item = {"role": turn["role"], "text": turn["text"]}
        if turn["role"] == "assistant":
            item |= answer_record(turn, ("thinking_seconds",))
        if turn.get("images"):
            item["images"] = [
                {"name": Path(p).name, "data_url": embedded(p)} for p in turn["images"]
            ]
        if turn.get("video"):
            video = turn["video"]
            item["video"] = {**video, "path": None, "name": Path(video["path"]).name}
        for key in ("reasoning", "answer_style", "stats", "model", "feedback", "number"):
            if turn.get(key):
                item[key] = turn[key]
        if turn["role"] == "assistant" and turn.get("alternatives"):
            fields = tuple(key for key in ANSWER_FIELDS if key not in ("text", "thinking_mode"))
            item["alternatives"] = [answer_record(other, fields) for other in turn["alternatives"]]
        record_turns.append(item)
    return {
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "settings": settings,
        "turns": record_turns,
    }


FEEDBACK_MARKS = {"like": "👍 liked", "dislike": "👎 disliked"}


def answer_heading(answer: dict, record_model: str) -> str:
    """An answer's heading: its model when it is not the export's, and its feedback."""
    heading = "Assistant"
    if answer.get("model", record_model) != record_model:  # answered by another model
        heading += f" ({answer['model']})"
    if answer.get("feedback") in FEEDBACK_MARKS:
        heading += f" · {FEEDBACK_MARKS[answer['feedback']]}"
    return heading


def thinking_lines(answer: dict) -> list[str]:
    """An answer's thinking, folded (a <details> block) above it."""
    if "thinking" not in answer:
        return []
    seconds = answer.get("thinking_seconds")
    summary = "Thinking" + (f" ({seconds:.1f} s)" if seconds is not None else "")
    return ["", f"<details><summary>{summary}</summary>", "", answer["thinking"], "", "</details>"]


def export_markdown(record: dict) -> str:
    lines = [f"# Conversation with {record['model']}", "", f"Exported {record['exported_at']}", ""]
    lines += ["## Settings", ""]
    lines += [f"- **{key}**: {value}" for key, value in record["settings"].items()]
    image_number = 0
    for turn in record["turns"]:
        heading = "User" if turn["role"] == "user" else answer_heading(turn, record["model"])
        total = len(turn.get("alternatives", [])) + 1
        if total > 1:
            heading += f" · answer {turn['number']} of {total}, in use"
        lines += ["", f"## {heading}", ""]
        for image in turn.get("images", []):
            image_number += 1
            lines.append(f"![Image-{image_number}: {image['name']}]({image['data_url']})")
        if "video" in turn:
            video = turn["video"]
            lines.append(
                f"*Video {video['name']}: {video['num_frames']} frames, "
                f"{video['tiles_per_frame']} tile(s) each*"
            )
        lines += [*thinking_lines(turn), "", turn["text"]]
        if turn.get("stats"):
            lines += ["", f"*{turn['stats']}*"]
        for other in turn.get("alternatives", []):
            heading = f"{answer_heading(other, record['model'])} · answer {other['number']} "
            lines += ["", f"### {heading}of {total}, not used", *thinking_lines(other)]
            lines += ["", other["text"]]
            if other.get("stats"):
                lines += ["", f"*{other['stats']}*"]
    return "\n".join(lines) + "\n"


def write_exports(turns: list[dict], model: str, settings: dict) -> tuple[str, str] | None:
    """Write the two files; None for an empty conversation."""
    if not turns:
        return None
    with _WRITING:
        make_room(export_size_estimate(turns))
        record = export_record(turns, model, settings)
        folder = Path(tempfile.mkdtemp(prefix="internvl-chat-", dir=export_dir()))
        stem = folder / f"internvl-chat-{time.strftime('%Y%m%d-%H%M%S')}"
        json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
        json_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
        md_path.write_text(export_markdown(record))
    return str(json_path), str(md_path)
