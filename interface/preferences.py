"""Preference pairs from votes and likes, in the layout InternVL's MPO training reads (MMPR).

Only written when the operator asks for it (`--feedback-dir DIR`). The folder holds:

    DIR/pairs.jsonl     one JSON object per line, one line per pair, appended as votes come
    DIR/images/         every picture once, named by the blake2b hash of its bytes + extension

A line (keys in this order; `image` and `video` only when there are such media):

    {"image": "images/<hash>.jpg",          # relative to DIR; a list when several pictures
     "video": "images/<hash>.mp4",          # only for a video comparison (see below)
     "question": "...",                     # with InternVL's placeholders when several pictures
     "chosen": "...", "rejected": "...",
     "chosen_model": "...", "rejected_model": "...",
     "settings": {...},                     # what the answers were generated with
     "source": "vote" | "like",
     "time": "2025-01-31T12:00:00+00:00"}

`image`, `question`, `chosen` and `rejected` are MMPR's fields; InternVL's MPO loader
(`internvl_chat/internvl/train/internvl_chat_mpo.py`) reads them and ignores the others. It
joins `image` to the meta file's `root` and, for one picture, puts `<image>\\n` in front of the
question itself; for a list it expects the question to hold one `<image>` per picture, so a
question about several pictures is written as the demo prompts the model:
`Image-1: <image>\\nImage-2: <image>\\n...question`. Placeholders the user typed are removed
(`prompt.clean_text`), as they are before the model sees the question.

A video is recorded as the frames the model saw: they are sampled as the video tab samples
them (`settings` keys `num_frames`, `start`, `end`, as in `VideoClip`; 16 frames of the whole
video when absent), saved as JPEG (quality 95) in `images/`, listed in `image`, and the
question starts with `Frame1: <image>\\n...` as in the model card. InternVL's own video path
needs its internal storage client, its image path does not, so the record stays loadable by
the trainer; the video itself is kept too, under `video` (which the loader does not read when
`image` is there). A media file is a video when its extension is a video's (.mp4 .webm .mov
.mkv .avi), or when it is a .gif and `settings` has `num_frames` (as in the video tab).

Writers: each pair is one `os.write` of the whole line on the file opened with O_APPEND,
under an exclusive `flock`, so threads and processes never interleave. If the file does not
end with a newline (a crash in the middle of a write), the next line starts with one. Readers
ignore an unfinished last line and any line that is not a JSON object.

The command

    python -m interface.preferences DIR [--name NAME]

takes a snapshot of the finished lines and writes
- DIR/annotations/NAME.jsonl and DIR/meta.json, the meta file MPO training takes
  (`--meta_path DIR/meta.json`): {NAME: {root, annotation, data_augment, repeat_time, length}},
  with absolute paths;
- DIR/dataset/data.jsonl, for Hugging Face `datasets`: every row has the same fields, `images`
  a list of absolute paths (empty without pictures), `video` an absolute path or "", and
  `settings` as a JSON string, so that the JSON loader infers one schema:

    import datasets
    ds = datasets.load_dataset("json", data_files="DIR/dataset/data.jsonl", split="train")
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image()))

Both use absolute paths: after moving DIR, run the command again.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from model_backend.errors import InputError
from model_backend.media import sample_video
from model_backend.prompt import IMAGE_PLACEHOLDER, clean_text
from model_backend.types import VideoClip

__all__ = ["PreferenceStore", "append_line", "export", "read_pairs"]

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
MEDIA_DIR = "images"
SOURCES = ("vote", "like")
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi"}
FRAME_JPEG_QUALITY = 95
DEFAULT_NAME = "internvl_demo_pairs"


def file_digest(path: Path) -> str:
    """blake2b of the file's bytes, read in chunks (a video may be large)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def append_line(path: Path, line: bytes) -> None:
    """Append one whole line, safely with other threads and processes doing the same."""
    if not line.endswith(b"\n") or b"\n" in line[:-1]:
        raise ValueError("append_line takes exactly one line, ending with a newline")
    # O_RDWR (not O_WRONLY) so that the last byte can be read; O_APPEND puts every write at the
    # end even if another process appended after our fstat.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a crash cut the last line short: ours starts on a new one
        if os.write(fd, line) != len(line):
            os.ftruncate(fd, size)  # a short write (disk full): leave no half line
            raise OSError(f"Could not write a whole line to {path} (disk full?)")
        os.fsync(fd)  # a vote the page confirmed survives a power cut
    finally:
        os.close(fd)


def _read(path: Path) -> tuple[list[dict], int]:
    """The records of the finished lines, and how many finished lines were not records."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, skipped = [], 0
    for line in data.split(b"\n")[:-1]:  # the last piece has no newline: unfinished or empty
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: %d line(s) that are not pairs were skipped", path, skipped)
    return records, skipped


def read_pairs(path: str | Path) -> list[dict]:
    """Every pair of a pairs.jsonl file; an unfinished last line is left out."""
    return _read(Path(path))[0]


def _is_video(path: Path, settings: dict) -> bool:
    suffix = path.suffix.lower()
    return suffix in VIDEO_SUFFIXES or (suffix == ".gif" and "num_frames" in settings)


def _with_placeholders(question: str, count: int, video: bool) -> str:
    """The question as InternVL's loader expects it: one `<image>` per picture in a list."""
    question = clean_text(question)
    if video:
        return "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(count)) + question
    if count > 1:
        return "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(count)) + question
    return question  # one picture: the loader adds `<image>\n` itself


class PreferenceStore:
    """Appends preference pairs to `folder/pairs.jsonl`, copying their media once."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.media_dir = self.folder / MEDIA_DIR
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / PAIRS_FILE

    def add_pair(
        self,
        *,
        media: Sequence[str],
        question: str,
        chosen: str,
        rejected: str,
        chosen_model: str,
        rejected_model: str,
        settings: dict,
        source: str,
    ) -> dict:
        """Write one pair (one whole line) and return the record written.

        Raises InputError when there is nothing to learn from: an empty question or answer,
        or the same answer on both sides.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if not question.strip():
            raise InputError("There is no question to keep with this preference.")
        if not chosen.strip() or not rejected.strip():
            raise InputError("Both answers must have text for a preference to be kept.")
        if chosen.strip() == rejected.strip():
            raise InputError("Both answers are the same, so there is no preference to keep.")
        settings = dict(settings)
        images, video = self._store_media([Path(p) for p in media], settings)

        record: dict = {}
        if images:
            record["image"] = images if len(images) > 1 or video else images[0]
        if video:
            record["video"] = video
        record |= {
            "question": _with_placeholders(question, len(images), bool(video)),
            "chosen": chosen,
            "rejected": rejected,
            "chosen_model": chosen_model,
            "rejected_model": rejected_model,
            "settings": settings,
            "source": source,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        # default=str: a setting json cannot write (a Path, say) is kept as text, not lost.
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        append_line(self.path, line.encode("utf-8"))
        return json.loads(line)

    def pairs(self) -> list[dict]:
        return read_pairs(self.path)

    def _store_media(self, paths: list[Path], settings: dict) -> tuple[list[str], str | None]:
        """(pictures, video) as paths relative to the folder, after copying them in."""
        for path in paths:
            if not path.is_file():
                raise InputError(
                    f"The file {path.name} is no longer available, so the preference cannot "
                    "be kept with it. Please attach it again."
                )
        videos = [path for path in paths if _is_video(path, settings)]
        if not videos:
            return [self._copy(path) for path in paths], None
        if len(paths) > 1:
            raise ValueError("a video comparison has the video as its only media")
        clip = VideoClip(
            str(paths[0]),
            num_frames=int(settings.get("num_frames", VideoClip.num_frames)),
            # As the video tab reads its boxes: empty or 0 is the video's own start/end.
            start=float(settings["start"]) if settings.get("start") else None,
            end=float(settings["end"]) if settings.get("end") else None,
        )
        frames, _ = sample_video(clip)  # cached: the answers were just made from these frames
        return [self._frame(frame) for frame in frames], self._copy(paths[0])

    def _copy(self, path: Path) -> str:
        name = file_digest(path) + path.suffix.lower()
        return self._place(name, lambda target: shutil.copyfile(path, target))

    def _frame(self, frame) -> str:
        buffer = io.BytesIO()
        frame.convert("RGB").save(buffer, "JPEG", quality=FRAME_JPEG_QUALITY)
        data = buffer.getvalue()
        name = hashlib.blake2b(data, digest_size=16).hexdigest() + ".jpg"
        return self._place(name, lambda target: target.write_bytes(data))

    def _place(self, name: str, fill: Callable[[Path], object]) -> str:
        """Put a file in images/ unless it is there already; never a half-written one."""
        target = self.media_dir / name
        if not target.exists():
            fd, temporary = tempfile.mkstemp(dir=self.media_dir, prefix=".", suffix=".part")
            os.close(fd)
            try:
                fill(Path(temporary))
                os.replace(temporary, target)  # two writers of one picture write the same bytes
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return f"{MEDIA_DIR}/{name}"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _dataset_row(record: dict, root: Path) -> dict:
    """A row every other row looks like (same fields, same types), with absolute paths."""
    images = record.get("image") or []
    images = [images] if isinstance(images, str) else images
    video = record.get("video")
    return {
        "images": [str(root / image) for image in images],
        "video": str(root / video) if video else "",
        "question": record["question"],
        "chosen": record["chosen"],
        "rejected": record["rejected"],
        "chosen_model": str(record.get("chosen_model", "")),
        "rejected_model": str(record.get("rejected_model", "")),
        "source": str(record.get("source", "")),
        "time": str(record.get("time", "")),
        "settings": json.dumps(record.get("settings", {}), ensure_ascii=False),
    }


def export(folder: str | Path, name: str = DEFAULT_NAME) -> dict:
    """Write the MPO meta file and the `datasets` folder for `folder`; return what was written.

    Raises InputError when the folder holds no pairs.
    """
    root = Path(folder).resolve()
    records, skipped = _read(root / PAIRS_FILE)
    pairs = [r for r in records if {"question", "chosen", "rejected"} <= r.keys()]
    skipped += len(records) - len(pairs)
    if not pairs:
        raise InputError(f"{root / PAIRS_FILE} holds no preference pairs yet.")

    def lines(rows: list[dict]) -> str:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    annotation = root / "annotations" / f"{name}.jsonl"
    _write_atomically(annotation, lines(pairs))
    meta = {
        name: {
            "root": str(root),
            "annotation": str(annotation),
            "data_augment": False,
            "repeat_time": 1,
            "length": len(pairs),
        }
    }
    meta_path = root / "meta.json"
    _write_atomically(meta_path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    data_path = root / "dataset" / "data.jsonl"
    _write_atomically(data_path, lines([_dataset_row(r, root) for r in pairs]))
    return {
        "pairs": len(pairs),
        "skipped": skipped,
        "meta": meta_path,
        "annotation": annotation,
        "dataset": data_path,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interface.preferences",
        description="Turn a --feedback-dir folder into InternVL MPO training data "
        "(meta file) and a Hugging Face datasets JSON dataset.",
    )
    parser.add_argument("folder", help="the folder given to the demo as --feedback-dir")
    parser.add_argument("--name", default=DEFAULT_NAME, help="the dataset's name in meta.json")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        print(f"{args.folder} is not a folder.", file=sys.stderr)
        return 2
    try:
        written = export(args.folder, args.name)
    except InputError as error:
        print(error, file=sys.stderr)
        return 1
    skipped = f" ({written['skipped']} unfinished or broken line(s) skipped)"
    count = written["pairs"]
    plural = "pair" if count == 1 else "pairs"
    print(f"{count} preference {plural}{skipped if written['skipped'] else ''}.")
    print(f"Wrote {written['annotation']}\n      {written['meta']}  (MPO meta file)")
    print(
        "  Train: in InternVL's internvl_chat, pass --meta_path "
        f"{written['meta']} to the MPO script (internvl/train/internvl_chat_mpo.py)."
    )
    print(f"Wrote {written['dataset']}  (Hugging Face datasets)")
    print(
        "  Load: datasets.load_dataset('json', data_files="
        f"'{written['dataset']}', split='train')"
        ".cast_column('images', datasets.Sequence(datasets.Image()))"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
