"""The grounding tab and `/grounding`, on a backend that answers with known boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from interface import grounding_chat, grounding_view
from interface.conversation import assistant_turn, to_chatbot, user_turn
from model_backend.grounding import DETECTION_PROMPT, REFERRING_PROMPT, label_colors
from tests.conftest import COFFEE, REPO, launched
from tests.scripted_backend import ScriptedBackend

REPLY = (
    "Here it is: <ref>the cup</ref><box>[[100, 200, 500, 800]]</box> and "
    "<ref>the spoon</ref><box>[[600, 300, 700, 900]]</box>."
)
TWENTY_BOXES = "".join(
    f"<ref>thing {i}</ref><box>[[{10 + 40 * i}, 100, {40 + 40 * i}, 900]]</box>" for i in range(20)
)
EXPECTED = [
    {"label": "the cup", "x1": 60.0, "y1": 80.0, "x2": 300.0, "y2": 320.0},
    {"label": "the spoon", "x1": 360.0, "y1": 120.0, "x2": 420.0, "y2": 360.0},
]


@pytest.fixture(scope="module")
def scripted():
    return ScriptedBackend(REPLY)


@pytest.fixture(scope="module")
def scripted_url(scripted, gradio_temp_dir):
    with launched(scripted) as url:
        yield url


def test_grounding_endpoint_streams_and_returns_boxes_and_the_drawing(scripted, scripted_url):
    client = Client(scripted_url, verbose=False)
    job = client.submit(
        image=handle_file(COFFEE), query="the cup", mode="find", api_name="/grounding"
    )
    outputs = list(job)
    assert len(outputs) > 5
    texts = [text for text, _, _, _ in outputs]
    assert texts[-1] == REPLY
    box_counts = [len(boxes) for _, boxes, _, _ in outputs]
    assert box_counts == sorted(box_counts) and box_counts[0] == 0  # boxes appear as they close
    _answer, boxes, drawing, thinking = job.result()
    assert thinking == ""
    assert boxes == EXPECTED
    image = Image.open(drawing).convert("RGB")
    assert image.size == (600, 400)  # drawn on the image as sent, not on a resized copy
    colour = label_colors(["the cup", "the spoon"])["the cup"]
    edge = image.getpixel((60, 200))  # the left edge of the cup's box (a JPEG, like the photo)
    assert all(abs(a - b) <= 8 for a, b in zip(edge, colour, strict=True)), edge
    assert scripted.conversations[-1].turns[-1].text == REFERRING_PROMPT.format(
        expression="the cup"
    )
    client.predict(image=handle_file(COFFEE), query="", mode="detect", api_name="/grounding")
    assert scripted.conversations[-1].turns[-1].text == DETECTION_PROMPT
    client.close()


def test_many_boxes_on_a_huge_image_are_drawn_on_a_bounded_copy(
    scripted, scripted_url, tmp_path, monkeypatch
):
    # 20 boxes on a 24 MP photo: each new box was drawn on the full image and re-encoded while
    # the model's slot was held (47 s against 5.5 s on a 63 MP one). Boxes stay in the photo's
    # pixels; the drawing is a copy of at most DRAWING_MAX_SIDE a side.
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4000), (200, 200, 200)).save(huge, quality=80)
    reply = TWENTY_BOXES
    drawn_sizes = []
    real_draw = grounding_view.draw_boxes
    monkeypatch.setattr(
        grounding_view,
        "draw_boxes",
        lambda image, boxes: drawn_sizes.append(image.size) or real_draw(image, boxes),
    )
    monkeypatch.setattr(scripted, "reply", reply)
    monkeypatch.setattr(scripted, "piece_size", 16)
    client = Client(scripted_url, verbose=False)
    _answer, boxes, drawing, _thinking = client.predict(
        image=handle_file(str(huge)), query="", mode="detect", api_name="/grounding"
    )
    client.close()
    assert len(boxes) == 20
    assert boxes[3] == {"label": "thing 3", "x1": 780.0, "y1": 400.0, "x2": 960.0, "y2": 3600.0}
    assert drawn_sizes and max(max(size) for size in drawn_sizes) <= 2048  # DRAWING_MAX_SIDE
    assert len(drawn_sizes) <= 20  # once per new box at most
    image = Image.open(drawing).convert("RGB")
    assert image.size == (2048, 1365)
    colour = label_colors([f"thing {i}" for i in range(20)])["thing 3"]
    edge = image.getpixel((round(780 * 2048 / 6000), 680))  # thing 3's left edge, scaled
    assert all(abs(a - b) <= 8 for a, b in zip(edge, colour, strict=True)), edge


def test_grounding_refuses_an_unknown_mode_and_a_missing_expression(scripted_url):
    from gradio_client.exceptions import AppError

    client = Client(scripted_url, verbose=False)
    with pytest.raises(AppError, match="Unknown mode"):
        client.predict(image=handle_file(COFFEE), query="x", mode="seek", api_name="/grounding")
    with pytest.raises(AppError, match="what to find"):
        client.predict(image=handle_file(COFFEE), query=" ", mode="find", api_name="/grounding")
    client.close()


def test_answers_with_boxes_are_drawn_in_every_tab(tmp_path):
    image = tmp_path / "coffee.jpg"
    shutil.copy(COFFEE, image)
    messages = to_chatbot([user_turn("Where is the cup?", [str(image)]), assistant_turn(REPLY)])
    assert messages[1]["content"].startswith("Here it is: **the cup** `[100, 200, 500, 800]`")
    drawing = messages[2]["content"]["path"]
    assert Image.open(drawing).size == (600, 400)


@pytest.mark.browser
def test_grounding_journey_in_the_browser(browser, scripted_url):
    expect = pytest.importorskip("playwright.sync_api").expect
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = context.new_page()
        page.goto(scripted_url)
        page.get_by_role("tab", name="Grounding").click()
        page.locator("#grounding-image input[type='file']").set_input_files(COFFEE)
        expect(page.locator("#grounding-image img")).to_be_visible(timeout=30_000)
        page.get_by_label("Find").check()
        box = page.locator("#grounding-input textarea")
        box.fill("the cup")
        box.press("Enter")
        expect(page.locator("#grounding-drawn img")).to_be_visible(timeout=30_000)
        table = page.locator("#grounding-table")
        expect(table).to_contain_text("the spoon", timeout=30_000)
        expect(table).to_contain_text("360")
        chat = page.locator("#grounding-chatbot")
        expect(chat).to_contain_text("the cup [100, 200, 500, 800]")
        expect(chat).not_to_contain_text("<ref>")
        download = page.locator("#grounding-json a").first
        expect(download).to_be_visible()
        href = download.get_attribute("href")
        saved = json.loads(page.request.get(href).text())
        assert saved["width"] == 600 and saved["height"] == 400
        assert saved["boxes"] == EXPECTED
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "test-artifacts" / "grounding.png"), full_page=True)
    finally:
        context.close()


def test_the_drawing_follows_the_boxes_a_few_times_a_second_and_ends_complete(
    scripted, scripted_url, monkeypatch
):
    """Each new box was drawn (and encoded) while the model's slot was held: 20 boxes, 20
    drawings. Now at most four a second while the answer streams, and the last one complete."""
    reply = TWENTY_BOXES
    drawings = []
    real = grounding_chat.annotated_file
    monkeypatch.setattr(
        grounding_chat,
        "annotated_file",
        lambda image, boxes: drawings.append(len(boxes)) or real(image, boxes),
    )
    monkeypatch.setattr(scripted, "reply", reply)
    monkeypatch.setattr(scripted, "seconds_per_piece", 0.001)
    client = Client(scripted_url, verbose=False)
    _answer, boxes, drawing, _thinking = client.predict(
        image=handle_file(COFFEE), query="", mode="detect", api_name="/grounding"
    )
    client.close()
    assert len(boxes) == 20
    assert drawings[-1] == 20 and len(drawings) < 10, drawings
    complete = real(COFFEE, grounding_view.answer_boxes(COFFEE, reply))
    assert Image.open(drawing).tobytes() == Image.open(complete).tobytes()


def test_the_drawings_folder_keeps_a_bounded_number_of_files():
    before = set(grounding_view.drawings_dir().iterdir())
    for i in range(grounding_view.KEPT_FILES + 40):
        box = grounding_view.answer_boxes(COFFEE, f"<box>[[{i}, 10, {i + 50}, 60]]</box>")
        grounding_view.boxes_json_file(COFFEE, box)
    files = set(grounding_view.drawings_dir().iterdir())
    assert len(files) == grounding_view.KEPT_FILES
    assert files - before  # the newest stayed


def test_gradio_temp_files_are_deleted_once_old(scripted):
    from interface.layout import UPLOADS_KEPT_S, build_demo

    assert build_demo(scripted).delete_cache == (3600, UPLOADS_KEPT_S)


def test_a_drawing_asked_for_again_after_its_file_went_is_drawn_again():
    boxes = grounding_view.answer_boxes(COFFEE, "<box>[[1, 2, 300, 400]]</box>")
    first = grounding_view.annotated_file(COFFEE, boxes)
    Path(first).unlink()  # as keep_newest does once many newer files were written
    again = grounding_view.annotated_file(COFFEE, boxes)
    assert again == first and Path(again).is_file()


def test_the_copies_drawings_are_made_on_are_bounded_by_bytes(tmp_path):
    """Kept by bytes, not by count: four full-size copies, or many small ones."""
    grounding_view.DRAWING_BASES.clear()
    for i in range(6):
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (2048, 2048), (i, 0, 0)).save(path, compress_level=1)
        assert grounding_view.drawing_base(str(path)).size == (2048, 2048)
    assert len(grounding_view.DRAWING_BASES) == 4  # 16 MB each
    grounding_view.DRAWING_BASES.clear()
    for i in range(40):
        path = tmp_path / f"small{i}.png"
        Image.new("RGB", (64, 48), (i, 0, 0)).save(path)
        grounding_view.drawing_base(str(path))
    assert len(grounding_view.DRAWING_BASES) == 40


def test_boxes_on_a_photo_taken_sideways_land_on_the_upright_image(tmp_path):
    """The size comes from the header with its EXIF orientation, as the model saw the image."""
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 600x400, shown turned a quarter: 400x600
    Image.new("RGB", (600, 400), (255, 255, 255)).save(sideways, exif=exif, quality=95)
    assert grounding_view.full_size(str(sideways)) == (400, 600)
    boxes = grounding_view.answer_boxes(str(sideways), "<box>[[250, 500, 750, 1000]]</box>")
    assert (boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2) == (100, 300, 300, 600)
    drawing = Image.open(grounding_view.annotated_file(str(sideways), boxes)).convert("RGB")
    assert drawing.size == (400, 600)
    assert min(drawing.getpixel((100, 450))) < 200  # the box's left edge
    assert min(drawing.getpixel((200, 450))) > 245  # inside the box: white as before


def test_the_boxes_file_is_written_once_for_the_same_boxes(monkeypatch):
    """A streaming answer asks for it a few times a second; the file is written once."""
    boxes = grounding_view.answer_boxes(COFFEE, "<box>[[3, 1, 300, 400]]</box>")
    first = Path(grounding_view.boxes_json_file(COFFEE, boxes))
    monkeypatch.setattr(Path, "write_text", lambda *args, **kwargs: pytest.fail("written again"))
    assert grounding_view.boxes_json_file(COFFEE, boxes) == str(first)
    assert json.loads(first.read_text())["width"] == 600


def test_drawings_are_written_inside_gradios_temp_folder(monkeypatch, tmp_path):
    """So that Gradio serves them as they are, instead of hashing and copying each drawing of
    the conversation into its cache on every screen update."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    boxes = grounding_view.answer_boxes(COFFEE, "<box>[[5, 2, 300, 400]]</box>")
    assert Path(grounding_view.annotated_file(COFFEE, boxes)).is_relative_to(tmp_path)
    assert Path(grounding_view.boxes_json_file(COFFEE, boxes)).is_relative_to(tmp_path)
