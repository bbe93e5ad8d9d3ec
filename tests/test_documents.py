"""Document chat: PDFs made here (text, image-only, encrypted, corrupt, empty, 300 and 501 pages),
page selection and its messages, rendering and its cache, the prompt, and /document_chat."""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import threading
import time
import zlib
from pathlib import Path

import gradio as gr
import psutil
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import model_backend.documents as documents
import model_backend.pdf_renderer as pdf_renderer
from interface.conversation import to_conversation
from interface.document_chat import (
    ADD_A_DOCUMENT,
    attached_document,
    collect_document_turn,
    preview,
)
from interface.history import make_entry, questions_of, restore_notice, restored_turns
from model_backend.base import Conversation, GenerationSettings, Turn
from model_backend.cancel import RequestCancelled, cancellable
from model_backend.documents import (
    MAX_PAGES_PER_QUESTION,
    RENDER_LONG_SIDE,
    document_info,
    page_images,
    parse_pages,
)
from model_backend.errors import InputError
from model_backend.media import image_token_estimate
from model_backend.prompt import chat_messages, image_tile_budgets
from tests.conftest import EXAMPLES, wait_until

A4 = (595, 842)

# -- PDFs made here ---------------------------------------------------------------------------


def add_text(document: pdfium.PdfDocument, page: pdfium.PdfPage, text: str, y: float) -> None:
    """A line of real text (Helvetica), as a born-digital PDF has."""
    obj = pdfium_raw.FPDFPageObj_NewTextObj(document.raw, b"Helvetica", ctypes.c_float(24))
    wide = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
    pdfium_raw.FPDFText_SetText(obj, ctypes.cast(wide, ctypes.POINTER(pdfium_raw.FPDF_WCHAR)))
    pdfium_raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 60, y)
    pdfium_raw.FPDFPage_InsertObject(page.raw, obj)


def add_picture(document: pdfium.PdfDocument, page: pdfium.PdfPage, size: tuple) -> None:
    """A picture filling the page and nothing else, as a scanned page is."""
    picture = pdfium.PdfImage.new(document)
    picture.set_bitmap(pdfium.PdfBitmap.from_pil(Image.new("RGB", (300, 420), (200, 40, 40))))
    picture.set_matrix(pdfium.PdfMatrix().scale(*size))
    page.insert_obj(picture)


def write_pdf(path: Path, count: int, size=A4, picture_pages=(), text: bool = True) -> Path:
    """A PDF of `count` pages, each saying its number (the pages in `picture_pages` are an image
    without text)."""
    document = pdfium.PdfDocument.new()
    for number in range(1, count + 1):
        page = document.new_page(*size)
        if number in picture_pages:
            add_picture(document, page, size)
        elif text:
            add_text(document, page, f"This is page {number}.", size[1] - 100)
        page.gen_content()
    document.save(str(path))
    return path


def raw_pdf(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF written by hand: the objects (numbered from 1, the first one the catalog)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    size = len(objects) + 1
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (size, trailer, xref)
    )
    return out.getvalue()


def flate_stream(content: bytes) -> bytes:
    data = zlib.compress(content)
    return b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(data), data)


# The standard security handler's padding (PDF 1.7, 7.6.3.3).
PADDING = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes = b"secret") -> bytes:
    """A one-page PDF encrypted by the standard handler (RC4, 40 bits, revision 2), with a user
    password: no installed tool writes one, so it is written here (PDF 1.7, algorithms 2-4)."""
    file_id, permissions = b"0123456789abcdef", -4
    padded_user = (user_password + PADDING)[:32]
    owner = rc4(hashlib.md5((b"owner" + PADDING)[:32]).digest()[:5], padded_user)
    p_bytes = permissions.to_bytes(4, "little", signed=True)
    key = hashlib.md5(padded_user + owner + p_bytes + file_id).digest()[:5]
    user = rc4(key, PADDING)
    object_key = hashlib.md5(key + (4).to_bytes(3, "little") + b"\0\0").digest()[:10]
    stream = rc4(object_key, b"BT /F1 24 Tf 20 40 Td (Secret) Tj ET")
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
            % (owner.hex().encode(), user.hex().encode(), permissions),
        ],
        b"/Encrypt 5 0 R /ID [<%s> <%s>] " % (file_id.hex().encode(), file_id.hex().encode()),
    )


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdfs")
    made = {
        "five": write_pdf(folder / "five.pdf", 5, picture_pages=(2,)),
        "long": write_pdf(folder / "long.pdf", 300),
        "too_long": write_pdf(folder / "too_long.pdf", 501, text=False),
        "huge": write_pdf(folder / "huge.pdf", 1, size=(20_000, 20_000), text=False),
        "small": write_pdf(folder / "small.pdf", 1, size=(144, 72)),
    }
    for name, data in {
        "encrypted": encrypted_pdf(),
        "corrupt": b"%PDF-1.7\n" + bytes(range(256)) * 8,
        "empty": raw_pdf(
            [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
        ),
        # A few hundred bytes whose page tree claims a million pages (it holds one).
        "claims_a_million": raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1000000 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            ]
        ),
        # One page of 40,000 long lines: PDFium draws it for seconds (7 s here).
        "slow": raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                flate_stream(
                    b"".join(
                        b"%d %d m %d %d l S\n" % (i % 600, i % 800, i * 7 % 600, i * 13 % 800)
                        for i in range(40_000)
                    )
                ),
            ]
        ),
        # It claims three pages and holds one.
        "missing_pages": raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 3 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            ]
        ),
    }.items():
        made[name] = folder / f"{name}.pdf"
        made[name].write_bytes(data)
    return made


@pytest.fixture
def renders(monkeypatch, tmp_path) -> list[tuple]:
    """Every page rendered during the test, into a folder of rendered pages of its own."""
    folder = tmp_path / "pages"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(documents, "page_dir", lambda: folder)
    calls: list[tuple] = []
    real = documents.render_pages

    def counted(path, pages):
        calls.extend((Path(path).name, page) for page, _, _ in pages)
        return real(path, pages)

    monkeypatch.setattr(documents, "render_pages", counted)
    return calls


# -- the PDFs themselves ----------------------------------------------------------------------


def test_the_test_pdfs_are_what_they_claim(pdfs):
    five = pdfium.PdfDocument(str(pdfs["five"]))
    assert five[0].get_textpage().get_text_range() == "This is page 1."
    assert five[1].get_textpage().get_text_range() == ""  # image-only
    with pytest.raises(pdfium.PdfiumError, match="password"):
        pdfium.PdfDocument(str(pdfs["encrypted"]))
    assert len(pdfium.PdfDocument(str(pdfs["encrypted"]), password="secret")) == 1  # really one


# -- page selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "pages"),
    [
        ("1-3,5", 10, [1, 2, 3, 5]),
        (" 4 , 2-3 ", 10, [4, 2, 3]),  # in the order given
        ("2, 1-3, 2", 10, [2, 1, 3]),  # each page once
        ("", 3, [1, 2, 3]),
        ("", 300, list(range(1, MAX_PAGES_PER_QUESTION + 1))),
        (None, 1, [1]),
        ("299-300", 300, [299, 300]),
    ],
)
def test_pages_are_read_from_numbers_and_ranges(text, count, pages):
    assert parse_pages(text, count) == pages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("11", r"the document has 10 pages, so 11 is out of range \(pages are numbered 1 to 10\)"),
        ("8-12", "has 10 pages, so 8-12 is out of range"),
        ("0", "out of range"),
        ("1-9", "9 pages chosen; the limit is 8 per question"),
        ("1-4, 6-10", "9 pages chosen; the limit is 8"),
        ("1-100000000", "so 1-100000000 is out of range"),  # no huge list is built
        ("3-1", "3-1 runs backwards; write 1-3"),
        ("one", "'one' is not a page or a range"),
        ("1-2-3", "'1-2-3' is not a page or a range"),
        ("1;2", "is not a page or a range. Write page numbers and ranges separated by commas"),
        ("1,,2", "'' is not a page"),
    ],
)
def test_bad_page_selections_say_what_is_wrong(text, message):
    with pytest.raises(InputError, match=message):
        parse_pages(text, 10)


# -- documents refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("encrypted", "encrypted.pdf is protected by a password"),
        ("corrupt", "corrupt.pdf is not a PDF, or it is damaged"),
        ("empty", "empty.pdf has no pages"),
        ("too_long", "too_long.pdf has 501 pages; documents of up to 500 pages are taken"),
        ("claims_a_million", "has 1000000 pages; documents of up to 500 pages are taken"),
        ("missing_pages", "missing_pages.pdf is damaged: some of its pages cannot be read"),
    ],
)
def test_documents_that_cannot_be_used_get_a_clear_message(pdfs, name, message):
    with pytest.raises(InputError, match=message):
        document_info(pdfs[name])


def test_a_refused_document_keeps_nothing_in_memory(pdfs):
    """A million claimed pages once became a million page sizes kept per upload."""
    documents.DOCUMENTS.clear()
    for _ in range(2):
        with pytest.raises(InputError):
            document_info(pdfs["claims_a_million"])
    assert len(documents.DOCUMENTS) == 0


def test_rendered_pages_are_private_to_this_user(pdfs):
    (page,) = page_images(pdfs["small"], [1])
    folder = Path(page).parent
    assert folder == documents.page_dir()
    assert folder.stat().st_uid == os.getuid() and folder.stat().st_mode & 0o077 == 0


def test_an_empty_pdf_is_told_apart_whatever_failed_before(pdfs):
    """PDFium opens no document without pages and leaves its last error as it was."""
    for earlier in ("encrypted", "corrupt"):
        with pytest.raises(InputError):
            document_info(pdfs[earlier])
        with pytest.raises(InputError, match="has no pages"):
            document_info(pdfs["empty"])


def test_the_file_size_limit(pdfs, monkeypatch, tmp_path):
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1024)
    with pytest.raises(InputError, match=r"long.pdf is 0 MB; the limit is 0 MB"):
        document_info(pdfs["long"])
    (tmp_path / "nothing.pdf").write_bytes(b"")
    with pytest.raises(InputError, match=r"nothing\.pdf is empty"):
        document_info(tmp_path / "nothing.pdf")


def test_a_huge_page_is_refused_by_its_size(pdfs, renders):
    with pytest.raises(InputError, match=r"Page 1 of huge\.pdf is 278 x 278 inches; pages of up"):
        page_images(pdfs["huge"], [1])
    assert renders == []


# -- rendering --------------------------------------------------------------------------------


def test_pages_are_rendered_for_448_pixel_tiles(pdfs, renders):
    files = page_images(pdfs["five"], [1, 2])
    sizes = [Image.open(path).size for path in files]
    assert sizes == [(1267, RENDER_LONG_SIDE)] * 2  # A4 at 4 tiles of 448 on its long side
    assert Image.open(files[1]).getpixel((600, 900)) == (200, 40, 40)  # the picture page
    # A small page is not blown up beyond 288 dpi.
    assert Image.open(page_images(pdfs["small"], [1])[0]).size == (576, 288)


def test_pages_are_rendered_once_and_again_if_their_file_is_gone(pdfs, renders):
    first = page_images(pdfs["five"], [3, 4])
    assert page_images(pdfs["five"], [4, 3]) == first[::-1]
    assert renders == [("five.pdf", 3), ("five.pdf", 4)]
    Path(first[0]).unlink()
    assert page_images(pdfs["five"], [3]) == first[:1]
    assert Path(first[0]).is_file() and len(renders) == 3


def test_the_page_folder_is_bounded_and_spares_pages_in_use(tmp_path):
    old = time.time() - documents.RECENT_S - 60
    for index in range(5):
        (tmp_path / f"{index}.png").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{index}.png", (old + index, old + index))
    (tmp_path / "new.png").write_bytes(b"x" * 100)  # just rendered: a request may read it now
    (tmp_path / "page.123.part").write_bytes(b"x" * 100)  # being written
    (tmp_path / "page.45.part").write_bytes(b"x" * 10**6)  # left by a renderer that died
    os.utime(tmp_path / "page.45.part", (old, old))
    documents.sweep(tmp_path, 250, keep={tmp_path / "0.png"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png", "new.png", "page.123.part"]


def renderer_processes() -> list[psutil.Process]:
    """The PDFium processes this process started and has not reaped (a zombie counts)."""
    found = []
    for child in psutil.Process().children():
        try:
            if "model_backend.pdf_renderer" in child.cmdline():
                found.append(child)
        except psutil.ZombieProcess:
            found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_the_renderer_sees_no_secrets_and_leaves_nothing_once_cancelled(pdfs, renders, monkeypatch):
    """The server's tokens stay out of the renderer's environment and its request out of its
    command line (which `ps` shows every user); a cancelled render is killed, and the partial
    file it may have been writing is deleted."""
    monkeypatch.setenv("HF_TOKEN", "hf_server_secret")
    info = document_info(pdfs["slow"])  # measured now: rendering its page takes seconds
    _, target = documents.page_file(info, 1)
    cancelled, outcome = threading.Event(), []

    def ask() -> None:
        with cancellable(cancelled):
            try:
                page_images(pdfs["slow"], [1])
            except RequestCancelled as error:
                outcome.append(error)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        assert wait_until(renderer_processes)
        (child,) = renderer_processes()
        assert "HF_TOKEN" not in child.environ()
        assert not [part for part in child.cmdline() if "slow.pdf" in part]
        assert wait_until(lambda: child.rlimit(psutil.RLIMIT_CORE) == (0, 0))
        # What it leaves when it is killed while it saves the page.
        Path(pdf_renderer.partial_file(str(target), child.pid)).write_bytes(b"half a page")
    finally:
        cancelled.set()
        asking.join(30)
    assert outcome and renderer_processes() == []
    assert list(target.parent.iterdir()) == []


def test_a_module_in_the_servers_working_directory_cannot_stand_in_for_the_renderer(
    pdfs, renders, monkeypatch, tmp_path
):
    """`python -m` puts its working directory first on its import path: the renderer's is the
    project's, whatever folder the server was started in."""
    folder = tmp_path / "started_here"
    (folder / "model_backend").mkdir(parents=True)
    for name in ("model_backend/__init__.py", "json.py", "pypdfium2.py"):
        (folder / name).write_text("raise SystemExit('an impostor')\n")
    monkeypatch.chdir(folder)
    documents.DOCUMENTS.clear()  # measured again, by a new process
    (page,) = page_images(pdfs["small"], [1])
    assert Image.open(page).size == (576, 288)


def test_rendering_stops_between_pages_once_the_request_is_cancelled(pdfs, renders):
    cancelled = threading.Event()
    cancelled.set()
    with cancellable(cancelled), pytest.raises(RequestCancelled):
        page_images(pdfs["long"], [10, 11])
    assert renders == []


# -- the prompt -------------------------------------------------------------------------------


def test_pages_reach_the_model_as_labelled_images_sharing_the_tile_budget(backend, pdfs):
    pages = [2, 5]
    files = page_images(pdfs["five"], pages)
    question = Turn(
        "user", "What is on these pages?", tuple(files), image_labels=("Page-2", "Page-5")
    )
    conversation = Conversation((question,))
    assert chat_messages(conversation)[-1][1] == (
        "Page-2: <image>\nPage-5: <image>\nWhat is on these pages?"
    )
    inputs = backend.prepare(conversation, GenerationSettings(max_tiles=12))
    tiles = inputs.pixel_values.shape[0]
    # The two pages share the budget: up to 6 tiles each (an A4 page: a 2x3 grid + thumbnail).
    assert image_tile_budgets(conversation, 12) == [6, 6]
    assert tiles == sum(image_token_estimate(conversation, 12)) == 2 * 7
    image_token = backend.model.config.image_token_id
    assert (inputs.input_ids == image_token).sum().item() == tiles * backend.tokens_per_tile


def test_the_remote_backend_sends_the_pages_where_their_labels_are(pdfs):
    from model_backend.remote import openai_messages

    files = page_images(pdfs["five"], [4, 1])
    question = Turn("user", "Compare.", tuple(files), image_labels=("Page-4", "Page-1"))
    settings = GenerationSettings(max_tiles=12)
    parts = openai_messages(Conversation((question,)), settings, "generic")[0]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert [parts[0]["text"], parts[2]["text"], parts[4]["text"]] == [
        "Page-4: ",
        "\nPage-1: ",
        "\nCompare.",
    ]
    vllm = openai_messages(Conversation((question,)), settings, "vllm")[0]["content"]
    assert vllm[-1]["text"] == "Page-4: <image>\nPage-1: <image>\nCompare."


# -- the tab's own steps ----------------------------------------------------------------------


def test_a_follow_up_about_the_same_pages_carries_none(pdfs, renders):
    first = collect_document_turn({"text": "Summarise."}, [], str(pdfs["five"]), "1-2")
    assert first["image_labels"] == ["Page-1", "Page-2"] and len(first["images"]) == 2
    turns = [first, {"role": "assistant", "text": "A summary."}]
    follow_up = collect_document_turn({"text": "And page 2?"}, turns, str(pdfs["five"]), "1-2")
    assert follow_up["images"] == [] and "document" not in follow_up
    assert collect_document_turn({"text": "More?"}, turns, None, "")["images"] == []
    other = collect_document_turn({"text": "Page 4?"}, turns, str(pdfs["five"]), "4")
    assert other["image_labels"] == ["Page-4"]
    assert len(renders) == 3  # pages 1, 2 and 4, once each
    with pytest.raises(InputError, match=ADD_A_DOCUMENT):
        collect_document_turn({"text": "What?"}, [], None, "")


def test_pages_of_a_second_document_are_told_apart(pdfs):
    """Two documents in one conversation: the second one's pages are Doc-2 Page-k, in the
    prompt and in the preview; the first one's stay Page-k."""
    turns = [collect_document_turn({"text": "Summarise."}, [], str(pdfs["five"]), "1-2")]
    turns.append({"role": "assistant", "text": "A summary."})
    gallery, _ = preview(str(pdfs["long"]), "3", 12, turns)
    assert [caption for _, caption in gallery] == ["Doc-2 Page-3"]
    turns.append(collect_document_turn({"text": "And this?"}, turns, str(pdfs["long"]), "3"))
    turns.append({"role": "assistant", "text": "Another."})
    turns.append(collect_document_turn({"text": "Back to it."}, turns, str(pdfs["five"]), "4"))
    questions = [text for role, text in chat_messages(to_conversation(turns, "")) if role == "user"]
    assert questions == [
        "Page-1: <image>\nPage-2: <image>\nSummarise.",
        "Doc-2 Page-3: <image>\nAnd this?",
        "Page-4: <image>\nBack to it.",
    ]


def test_a_pdf_attached_to_the_question_becomes_the_previewed_document(pdfs):
    textbox, document = attached_document({"text": "What?", "files": [str(pdfs["long"])]})
    assert document == str(pdfs["long"]) and textbox.value == {"text": "What?", "files": []}
    nothing_attached = (gr.skip(), gr.skip())  # typing alone changes nothing else
    assert attached_document({"text": "What?", "files": []}) == nothing_attached
    assert attached_document(None) == nothing_attached


def test_a_restored_document_conversation_names_the_pdf_to_attach_again(pdfs):
    turns = [collect_document_turn({"text": "Totals?"}, [], str(pdfs["five"]), "1-3, 5")]
    turns.append({"role": "assistant", "text": "12."})
    entry = make_entry(turns, "saved")
    notice = restore_notice(entry)
    assert "five.pdf (pages 1-3, 5)" in notice and ".png" not in notice
    assert questions_of(restored_turns(entry)) == questions_of(turns)


def test_the_preview_numbers_the_pages_that_will_be_sent(pdfs):
    gallery, note = preview(str(pdfs["long"]), "7, 299-300", 12)
    assert [caption for _, caption in gallery] == ["Page-7", "Page-299", "Page-300"]
    assert "**long.pdf**: 300 pages · sending 3 (up to 4 tiles each)" in note
    assert "up to 8 pages per question" in note
    gallery, note = preview(str(pdfs["long"]), "301", 12)
    assert gallery == [] and "the document has 300 pages" in note


def test_the_example_document_is_made_by_the_project(tmp_path):
    from examples.make_sample_document import write
    from interface.examples import tab_examples

    assert len(pdfium.PdfDocument(str(write(tmp_path / "sample.pdf")))) == 3
    examples = tab_examples("document_chat")
    assert examples and examples[0]["files"] == [str(EXAMPLES / "sample_document.pdf")]
    assert document_info(EXAMPLES / "sample_document.pdf").page_count == 3


# -- /document_chat ---------------------------------------------------------------------------


def test_document_chat_sends_the_chosen_pages_as_page_images(client, stream_spy, pdfs):
    job = client.submit(
        document=handle_file(str(pdfs["long"])),
        question="What do these pages say?",
        pages="2, 299-300",
        max_new_tokens=64,
        api_name="/document_chat",
    )
    assert [answer for answer, _thinking in job if answer]
    conversation = stream_spy[-1].conversation
    assert len(conversation.turns[-1].images) == 3
    assert chat_messages(conversation)[-1][1] == (
        "Page-2: <image>\nPage-299: <image>\nPage-300: <image>\nWhat do these pages say?"
    )
    assert image_tile_budgets(conversation, 12) == [4, 4, 4]  # the pages share max_tiles


def test_document_chat_follow_ups_reuse_the_rendered_pages(client, stream_spy, pdfs, renders):
    asked = {"document": handle_file(str(pdfs["five"])), "pages": "3", "max_new_tokens": 4}
    answer, _thinking = client.predict(
        question="What is on it?", api_name="/document_chat", **asked
    )
    history = [
        {"role": "user", "content": "What is on it?"},
        {"role": "assistant", "content": answer},
    ]
    client.predict(question="Anything else?", history=history, api_name="/document_chat", **asked)
    assert renders == [("five.pdf", 3)]  # the second upload is the same document
    assert chat_messages(stream_spy[-1].conversation)[-1][1] == "Page-3: <image>\nAnything else?"
    assert len(stream_spy[-1].conversation.turns) == 3


def test_document_chat_with_no_pages_given_sends_the_first_ones(client, stream_spy, pdfs):
    client.predict(
        handle_file(str(pdfs["five"])), "Hi", max_new_tokens=4, api_name="/document_chat"
    )
    assert stream_spy[-1].conversation.turns[-1].image_labels == tuple(
        f"Page-{k}" for k in range(1, 6)
    )


@pytest.mark.parametrize(
    ("name", "pages", "message"),
    [
        ("long", "301", "the document has 300 pages, so 301 is out of range"),
        ("long", "1-10", "10 pages chosen; the limit is 8 per question"),
        ("long", "x", "'x' is not a page or a range"),
        ("encrypted", "", "protected by a password"),
        ("corrupt", "", "not a PDF, or it is damaged"),
        ("empty", "", "has no pages"),
        ("too_long", "", "has 501 pages"),
        ("huge", "", "278 x 278 inches"),
    ],
)
def test_document_chat_refuses_clearly_and_keeps_serving(client, pdfs, name, pages, message):
    with pytest.raises(AppError, match=message):
        client.predict(
            document=handle_file(str(pdfs[name])),
            question="What?",
            pages=pages,
            api_name="/document_chat",
        )
    assert client.predict(
        document=handle_file(str(pdfs["five"])),
        question="What?",
        pages="1",
        max_new_tokens=2,
        api_name="/document_chat",
    )[0]


def test_document_chat_survives_pages_too_slow_or_too_big_to_render(
    client, pdfs, renders, monkeypatch
):
    """PDFium runs in a process of its own, stopped at its time or memory limit."""
    ask = {"question": "What?", "max_new_tokens": 2, "api_name": "/document_chat"}
    normal_time, normal_memory = documents.RENDER_TIMEOUT_S, pdf_renderer.RENDER_MEMORY_BYTES
    document_info(pdfs["slow"])  # measured within the limits: opening it is quick
    monkeypatch.setattr(documents, "RENDER_TIMEOUT_S", 1.0)
    with pytest.raises(AppError, match=r"Page 1 of slow\.pdf took too long to render"):
        client.predict(document=handle_file(str(pdfs["slow"])), **ask)
    assert renderer_processes() == []  # stopped, not awaited
    monkeypatch.setattr(documents, "RENDER_TIMEOUT_S", normal_time)
    document_info(pdfs["five"])  # measured within the limits
    monkeypatch.setattr(pdf_renderer, "RENDER_MEMORY_BYTES", 4 * 1024**2)  # under a page's
    with pytest.raises(AppError, match=r"Page 2 of five\.pdf took too much memory to render"):
        client.predict(document=handle_file(str(pdfs["five"])), pages="2", **ask)
    monkeypatch.setattr(pdf_renderer, "RENDER_MEMORY_BYTES", normal_memory)
    assert client.predict(document=handle_file(str(pdfs["five"])), pages="2", **ask)
    assert renders == [("slow.pdf", 1), ("five.pdf", 2), ("five.pdf", 2)]


def test_document_chat_takes_pdfs_only(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a PDF")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(document=handle_file(str(text)), question="What?", api_name="/document_chat")
