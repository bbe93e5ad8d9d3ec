"""Chat export: the conversation, with its images and settings, as JSON and as Markdown.

Both files are self-contained (images embedded as base64), so nothing is lost when the page
closes. Videos are referred to by name with how they were sampled.
"""

from __future__ import annotations

import atexit
import base64
import json
import mimetypes
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def export_dir() -> Path:
    """This process's own folder for exports (private, removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="internvl-demo-exports-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def embedded(path: str) -> str:
    """A file as a data URL."""
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def export_record(turns: list[dict], model: str, settings: dict) -> dict:
    """The conversation as plain data: every turn, its media, and the settings used."""
    record_turns = []
    for turn in turns:
        item = {"role": turn["role"], "text": turn["text"]}
        if turn.get("images"):
            item["images"] = [
                {"name": Path(p).name, "data_url": embedded(p)} for p in turn["images"]
            ]
        if turn.get("video"):
            video = turn["video"]
            item["video"] = {**video, "path": None, "name": Path(video["path"]).name}
        for key in ("reasoning", "answer_style", "stats"):
            if turn.get(key):
                item[key] = turn[key]
        record_turns.append(item)
    return {
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "settings": settings,
        "turns": record_turns,
    }


def export_markdown(record: dict) -> str:
    lines = [f"# Conversation with {record['model']}", "", f"Exported {record['exported_at']}", ""]
    lines += ["## Settings", ""]
    lines += [f"- **{key}**: {value}" for key, value in record["settings"].items()]
    image_number = 0
    for turn in record["turns"]:
        lines += ["", "## " + ("User" if turn["role"] == "user" else "Assistant"), ""]
        for image in turn.get("images", []):
            image_number += 1
            lines.append(f"![Image-{image_number}: {image['name']}]({image['data_url']})")
        if "video" in turn:
            video = turn["video"]
            lines.append(
                f"*Video {video['name']}: {video['num_frames']} frames, "
                f"{video['tiles_per_frame']} tile(s) each*"
            )
        lines += ["", turn["text"]]
        if turn.get("stats"):
            lines += ["", f"*{turn['stats']}*"]
    return "\n".join(lines) + "\n"


def write_exports(turns: list[dict], model: str, settings: dict) -> tuple[str, str] | None:
    """Write the two files; None for an empty conversation."""
    if not turns:
        return None
    record = export_record(turns, model, settings)
    folder = Path(tempfile.mkdtemp(prefix="internvl-chat-", dir=export_dir()))
    stem = folder / f"internvl-chat-{time.strftime('%Y%m%d-%H%M%S')}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    md_path.write_text(export_markdown(record))
    return str(json_path), str(md_path)
