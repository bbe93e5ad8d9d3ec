"""Example prompts shipped in examples/prompts.json (images listed in examples/LICENSES)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@cache
def all_examples() -> dict[str, list[dict]]:
    path = EXAMPLES_DIR / "prompts.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def tab_examples(tab: str) -> list[dict]:
    """Entries `{"files": [absolute paths], "text": str}` for one tab, missing files skipped."""
    entries = []
    for entry in all_examples().get(tab, []):
        files = [str(EXAMPLES_DIR.parent / name) for name in entry["files"]]
        if all(Path(f).is_file() for f in files):
            entries.append({"files": files, "text": entry["text"]})
    return entries
