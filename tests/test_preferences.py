"""The preference pairs store: one whole MMPR line per pair, media once by hash, safe with
concurrent writers and crashes, and the command that makes MPO and `datasets` inputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from interface.preferences import PreferenceStore, read_pairs
from model_backend.errors import InputError
from tests.conftest import BOUNCING_BALL, CAT, COFFEE, REPO, ROCKET

SETTINGS = {"temperature": 0.7, "max_new_tokens": 256}


def pair(store: PreferenceStore, media=(CAT,), **changes) -> dict:
    fields = {
        "media": list(media),
        "question": "What animal is this?",
        "chosen": "A cat.",
        "rejected": "A dog.",
        "chosen_model": "InternVL2_5-2B-MPO",
        "rejected_model": "InternVL2_5-1B",
        "settings": SETTINGS,
        "source": "vote",
    }
    return store.add_pair(**(fields | changes))


def lines(store: PreferenceStore) -> list[bytes]:
    return store.path.read_bytes().splitlines(keepends=True)


def media_files(store: PreferenceStore) -> list[Path]:
    return sorted(p for p in store.media_dir.iterdir() if not p.name.startswith("."))


def as_mpo_loader_reads(record: dict, root: Path) -> list[Image.Image]:
    """What InternVL's MPO loader does with a line: pictures joined to the meta file's root,
    one `<image>` per picture of a list in the question (it adds one itself for one picture)."""
    image = record.get("image")
    paths = image if isinstance(image, list) else [image] if image else []
    if isinstance(image, list):
        assert record["question"].count("<image>") == len(image)
    else:
        assert "<image>" not in record["question"]
    assert record["chosen"] and record["rejected"]
    return [Image.open(os.path.join(root, p)).convert("RGB") for p in paths]


def test_a_pair_writes_one_mmpr_line_and_copies_the_picture(tmp_path):
    store = PreferenceStore(tmp_path / "feedback")
    written = pair(store)

    [line] = lines(store)
    assert line.endswith(b"\n")
    record = json.loads(line)
    assert record == written
    digest = hashlib.blake2b(Path(CAT).read_bytes(), digest_size=16).hexdigest()
    assert record["image"] == f"images/{digest}.jpg"
    assert (store.folder / record["image"]).read_bytes() == Path(CAT).read_bytes()
    assert record["question"] == "What animal is this?"
    assert (record["chosen"], record["rejected"]) == ("A cat.", "A dog.")
    assert (record["chosen_model"], record["rejected_model"]) == (
        "InternVL2_5-2B-MPO",
        "InternVL2_5-1B",
    )
    assert record["settings"] == SETTINGS
    assert record["source"] == "vote"
    assert record["time"].endswith("+00:00")
    assert "video" not in record
    assert [im.size for im in as_mpo_loader_reads(record, store.folder)] == [(451, 300)]


def test_two_pairs_about_one_picture_share_its_file(tmp_path):
    store = PreferenceStore(tmp_path)
    first = pair(store)
    second = pair(store, chosen="A small cat.", rejected="Nothing.", source="like")
    assert first["image"] == second["image"]
    assert len(media_files(store)) == 1
    assert [r["chosen"] for r in store.pairs()] == ["A cat.", "A small cat."]


def test_several_pictures_give_a_list_with_numbered_placeholders(tmp_path):
    store = PreferenceStore(tmp_path)
    record = pair(store, media=[CAT, COFFEE, ROCKET], question="Which <image> is a drink?")
    assert isinstance(record["image"], list) and len(record["image"]) == 3
    assert [Path(p).suffix for p in record["image"]] == [".jpg"] * 3
    # Numbered as the demo prompts the model; the user's own placeholder is removed.
    assert record["question"] == (
        "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nWhich  is a drink?"
    )
    sizes = [im.size for im in as_mpo_loader_reads(record, tmp_path)]
    assert sizes == [(451, 300), (600, 400), (640, 427)]


def test_a_video_is_kept_with_the_frames_the_model_saw(tmp_path):
    store = PreferenceStore(tmp_path)
    settings = {"num_frames": 4, "start": 0, "end": None}
    record = pair(store, media=[BOUNCING_BALL], question="Where does the ball go?",
                  settings=settings)  # fmt: skip
    assert record["video"].startswith("images/") and record["video"].endswith(".mp4")
    assert (tmp_path / record["video"]).read_bytes() == Path(BOUNCING_BALL).read_bytes()
    assert len(record["image"]) == 4
    assert record["question"].startswith("Frame1: <image>\nFrame2: <image>\n")
    assert record["question"].endswith("Frame4: <image>\nWhere does the ball go?")
    assert len(as_mpo_loader_reads(record, tmp_path)) == 4
    # The same comparison again stores nothing new.
    before = media_files(store)
    pair(store, media=[BOUNCING_BALL], chosen="Down.", settings=settings)
    assert media_files(store) == before


def test_a_pair_without_media_is_text_only(tmp_path):
    store = PreferenceStore(tmp_path)
    record = pair(store, media=[], question="Say hello.", chosen="Hello!", rejected="No.")
    assert "image" not in record
    assert media_files(store) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"chosen": "A cat.", "rejected": "A cat."}, "same"),
        ({"chosen": "A cat.", "rejected": " A cat.\n"}, "same"),
        ({"chosen": ""}, "answers"),
        ({"rejected": "   "}, "answers"),
        ({"question": " "}, "question"),
        ({"media": ["/nonexistent/photo.jpg"]}, "photo.jpg"),
    ],
)
def test_pairs_with_nothing_to_learn_are_refused(tmp_path, changes, message):
    store = PreferenceStore(tmp_path)
    with pytest.raises(InputError, match=message):
        pair(store, **changes)
    assert not store.path.exists()
    assert media_files(store) == []


WRITER = """
import sys
from interface.preferences import PreferenceStore
store = PreferenceStore(sys.argv[1])
for i in range(50):
    store.add_pair(media=[sys.argv[3]], question="q", chosen=f"{sys.argv[2]}-{i} " + "x" * 5000,
                   rejected="r", chosen_model="a", rejected_model="b", settings={}, source="vote")
"""


def test_concurrent_writers_give_whole_lines_and_lose_none(tmp_path):
    store = PreferenceStore(tmp_path)
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"p{n}", CAT], cwd=REPO)
        for n in range(2)
    ]

    def write(name: str) -> None:
        for i in range(50):  # long lines, so that interleaved writes would show
            pair(store, chosen=f"{name}-{i} " + "x" * 5000, rejected="r", settings={})

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        assert process.wait(timeout=120) == 0

    raw = lines(store)
    assert len(raw) == 500
    assert all(line.endswith(b"\n") for line in raw)
    records = [json.loads(line) for line in raw]
    names = {f"{w}-{i}" for w in ["p0", "p1"] + [f"t{n}" for n in range(8)] for i in range(50)}
    assert {r["chosen"].split()[0] for r in records} == names
    assert len(media_files(store)) == 1


def test_a_line_cut_short_is_ignored_and_the_next_starts_on_a_new_line(tmp_path):
    store = PreferenceStore(tmp_path)
    pair(store)
    with open(store.path, "ab") as file:  # a writer killed in the middle of its line
        file.write(b'{"image": "images/x.jpg", "question": "What is th')
    assert [r["chosen"] for r in read_pairs(store.path)] == ["A cat."]

    pair(store, chosen="A kitten.")
    raw = lines(store)
    assert raw[1] == b'{"image": "images/x.jpg", "question": "What is th\n'
    assert json.loads(raw[2])["chosen"] == "A kitten."
    assert [r["chosen"] for r in store.pairs()] == ["A cat.", "A kitten."]


def test_the_command_writes_the_mpo_meta_file_and_a_dataset(tmp_path):
    store = PreferenceStore(tmp_path / "fb")
    written = [
        pair(store),
        pair(store, media=[CAT, COFFEE], chosen="A cat and a coffee.", source="like"),
        pair(store, media=[], question="Hi?", chosen="Hello.", rejected="Bye."),
    ]
    with open(store.path, "ab") as file:
        file.write(b'{"question": "cut')  # unfinished: not counted

    result = subprocess.run(
        [sys.executable, "-m", "interface.preferences", str(store.folder), "--name", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    root = store.folder.resolve()
    assert "3 preference pairs" in result.stdout
    assert str(root / "meta.json") in result.stdout
    assert "load_dataset('json'" in result.stdout

    meta = json.loads((root / "meta.json").read_text())
    assert meta == {
        "demo": {
            "root": str(root),
            "annotation": str(root / "annotations" / "demo.jsonl"),
            "data_augment": False,
            "repeat_time": 1,
            "length": 3,
        }
    }
    # The annotation holds the finished lines only, and the trainer can read every one.
    annotation = Path(meta["demo"]["annotation"]).read_text().splitlines()
    assert [json.loads(line) for line in annotation] == written
    for record in written:
        as_mpo_loader_reads(record, Path(meta["demo"]["root"]))

    rows = [json.loads(line) for line in (root / "dataset" / "data.jsonl").read_text().splitlines()]
    assert [set(row) for row in rows] == [set(rows[0])] * 3  # one schema for the JSON loader
    assert [(r["question"], r["chosen"], r["rejected"]) for r in rows] == [
        (w["question"], w["chosen"], w["rejected"]) for w in written
    ]
    assert rows[0]["images"] == [str(root / written[0]["image"])]
    assert rows[1]["images"] == [str(root / p) for p in written[1]["image"]]
    assert rows[2]["images"] == []
    assert all(Path(p).is_absolute() and Path(p).is_file() for r in rows for p in r["images"])
    assert json.loads(rows[0]["settings"]) == SETTINGS
    assert [r["source"] for r in rows] == ["vote", "like", "vote"]


def test_the_dataset_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    store = PreferenceStore(tmp_path)
    pair(store)
    pair(store, media=[CAT, ROCKET], chosen="A cat and a rocket.")
    subprocess.run([sys.executable, "-m", "interface.preferences", str(tmp_path)], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    data = tmp_path / "dataset" / "data.jsonl"
    ds = datasets.load_dataset("json", data_files=str(data), split="train")
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image()))
    assert [len(row["images"]) for row in ds] == [1, 2]
    assert ds[1]["images"][1].size == (640, 427)


def test_the_command_refuses_an_empty_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "interface.preferences", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no preference pairs" in result.stderr
    assert not (tmp_path / "meta.json").exists()
