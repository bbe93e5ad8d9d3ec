"""PDF documents -> the page images the model reads (pypdfium2, PDFium's own renderer).

PDFium runs in a process of its own, with a time and a memory limit (model_backend.pdf_renderer):
one to measure a new document, one to render the new pages of a question. A page that takes
longer than RENDER_TIMEOUT_S, or more memory than the renderer may use, is refused with a
message, and the server goes on serving.

A question about a document sends some of its pages, each rendered to a PNG file, as the images
of one user turn, labelled `Page-k` by their number in the document (model_backend.prompt); in
a conversation about several documents, the second one's pages are `Doc-2 Page-k`, and so on.

Resolution: a page is rendered so that its longer side is RENDER_LONG_SIDE = 1,792 pixels, four
448-pixel tiles. With the default budget of 12 tiles a lone Letter page is cut into a 3 x 4 grid
(about 150 dpi of the page: small print reads) and a lone A4 page into 2 x 3 (about 110 dpi: the
grid rule picks the aspect ratio nearest the page's); several pages share the budget, so each gets
fewer tiles: ask about fewer pages at once to read small print. Rendered more finely, the tiles
would only be scaled down again. The scale is at most
MAX_RENDER_SCALE (288 dpi: a small page is not blown up beyond that), and the image is never
larger than RENDER_LONG_SIDE on either side, so a page of any size costs at most 1,792 x 1,792
pixels of memory. Pages beyond the PDF standard's largest (200 inches a side) are refused.

Rendered pages are files (the backends take image paths) in page_dir(), this user's private
folder (mode 0700: other users of the machine cannot read or replace them), named by the document's
content digest, the page and the scale, so a follow-up, an API client sending the same document
again, or the gallery preview before the question all reuse them; the folder is bounded
(PAGE_DIR_MAX_BYTES, oldest files deleted first, never one written in the last minutes, which a
request may still be reading, nor one just reused) and a page whose file was deleted is
rendered again. The folder is the cache: it also outlives a restart of the server.
"""

from __future__ import annotations

import functools
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from model_backend import pdf_renderer
from model_backend.cancel import raise_if_cancelled
from model_backend.errors import InputError
from model_backend.media import BoundedCache, content_key

MAX_PAGES_PER_QUESTION = 8
MAX_DOCUMENT_PAGES = 500  # longer documents are refused: split them first
MAX_DOCUMENT_BYTES = 50 * 1024**2
RENDER_LONG_SIDE = 1792  # pixels: 4 tiles of 448 (see above)
MAX_RENDER_SCALE = 4.0  # 288 dpi (PDF units are 1/72 inch)
MAX_PAGE_POINTS = 14_400  # 200 inches, the largest page the PDF standard describes
PAGE_DIR_MAX_BYTES = 1024**3  # about a thousand rendered pages
RECENT_S = 600  # pages written this recently are not swept: a request may be about to read them
# Opening a document, or rendering the new pages of one question, may take this long (a page
# takes a fraction of a second); beyond it the renderer is stopped. Through the API this time
# is spent in the request's model-queue slot, so it is kept short.
RENDER_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class DocumentInfo:
    key: str  # digest of the file's bytes
    name: str
    page_sizes: tuple[tuple[float, float], ...]  # (width, height) of each page, in PDF units

    @property
    def page_count(self) -> int:
        return len(self.page_sizes)


# Page sizes by content digest: a document is opened once to measure its pages, however often
# it is asked about.
DOCUMENTS = BoundedCache(1024, lambda _: 1)


@functools.cache
def page_dir() -> Path:
    """This user's folder of rendered pages, private to them; a fresh one if the usual name is
    taken by something else (another user's folder, a link)."""
    folder = Path(tempfile.gettempdir()) / f"internvl-demo-pages-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        return Path(tempfile.mkdtemp(prefix="internvl-demo-pages-"))
    return folder


def limits_text() -> str:
    """The limits, as the tab and the API describe them."""
    return (
        f"up to {MAX_PAGES_PER_QUESTION} pages per question, documents of up to "
        f"{MAX_DOCUMENT_PAGES} pages and {MAX_DOCUMENT_BYTES // 1024**2} MB"
    )


def document_info(path: str | Path) -> DocumentInfo:
    """Check a PDF (size, encryption, damage, page count) and say how many pages it has."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"The file {path.name} could not be found.") from None
    if size > MAX_DOCUMENT_BYTES:
        raise InputError(
            f"The PDF {path.name} is {size / 1024**2:.0f} MB; the limit is "
            f"{MAX_DOCUMENT_BYTES // 1024**2} MB."
        )
    if size == 0:
        raise InputError(f"The file {path.name} is empty (0 bytes).")
    key = content_key(path)

    def measure() -> tuple[tuple[float, float], ...]:
        try:
            sizes = pdf_renderer.run(
                "measure",
                RENDER_TIMEOUT_S,
                path=os.path.abspath(path),
                max_pages=MAX_DOCUMENT_PAGES,
            )
        except pdf_renderer.TooSlow:
            raise InputError(
                f"The PDF {path.name} took too long to open (over {RENDER_TIMEOUT_S:g} s): it "
                f"may be damaged, or made to be slow."
            ) from None
        except pdf_renderer.TooBig:
            raise InputError(
                f"The PDF {path.name} took too much memory to open: it may be damaged, or made "
                f"to exhaust the renderer."
            ) from None
        return tuple((width, height) for width, height in sizes)

    sizes = DOCUMENTS.get_or_make(key, measure)
    if not sizes:
        raise InputError(f"The PDF {path.name} has no pages.")
    return DocumentInfo(key, path.name, sizes)


_RANGE = re.compile(r"^(\d+)\s*(?:-\s*(\d+))?$")


def parse_pages(text: str | None, page_count: int) -> list[int]:
    """Page numbers (from 1, in the order given, each once) from text like "1-3, 5".

    Empty: the first pages, up to MAX_PAGES_PER_QUESTION.
    """
    text = (text or "").strip()
    if not text:
        return list(range(1, min(page_count, MAX_PAGES_PER_QUESTION) + 1))
    pages: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise InputError(
                f"Pages: '{part.strip()}' is not a page or a range. Write page numbers and "
                f"ranges separated by commas, like 1-3, 5."
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first > last:
            raise InputError(
                f"Pages: the range {first}-{last} runs backwards; write {last}-{first}."
            )
        if first < 1 or last > page_count:
            raise InputError(
                f"Pages: the document has {page_count} page{'s' * (page_count != 1)}, so "
                f"{part.strip()} is out of range (pages are numbered 1 to {page_count})."
            )
        if last - first >= MAX_PAGES_PER_QUESTION:  # before building a huge list
            raise_too_many(last - first + 1)
        pages += [page for page in range(first, last + 1) if page not in pages]
        if len(pages) > MAX_PAGES_PER_QUESTION:
            raise_too_many(len(pages))
    return pages


def raise_too_many(count: int) -> None:
    raise InputError(
        f"Pages: {count} pages chosen; the limit is {MAX_PAGES_PER_QUESTION} per question. "
        f"Choose fewer (you can ask about the others in the next question)."
    )


def page_labels(pages: list[int], document: int = 1) -> list[str]:
    """How the model sees the pages: `Page-3`; in a conversation about several documents, the
    pages of the second one and later are told apart by its number: `Doc-2 Page-3`."""
    prefix = f"Doc-{document} " if document > 1 else ""
    return [f"{prefix}Page-{page}" for page in pages]


def page_ranges(pages: list[int]) -> str:
    """Page numbers as the Pages box takes them: [1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and page == runs[-1][-1] + 1:
            runs[-1].append(page)
        else:
            runs.append([page])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)


def page_images(path: str | Path, pages: list[int]) -> list[str]:
    """PNG files of the document's `pages` (numbers from 1), rendered once per document version:
    those not rendered yet (or deleted since) in one process, within RENDER_TIMEOUT_S."""
    info = document_info(path)
    files = [page_file(info, page) for page in pages]
    missing = []
    for page, (scale, target) in zip(pages, files, strict=True):
        try:
            os.utime(target)  # in use: the sweep spares it for RECENT_S
        except FileNotFoundError:
            missing.append((page, scale, target))
    if missing:
        raise_if_cancelled()
        render_pages(path, missing)
    return [str(target) for _, target in files]


def page_file(info: DocumentInfo, page: int) -> tuple[float, Path]:
    """The scale a page is rendered at, and its file (named by the document, page and scale)."""
    if not 1 <= page <= info.page_count:
        raise InputError(
            f"The PDF {info.name} has {info.page_count} pages; there is no page {page}."
        )
    scale = render_scale(info.name, page, *info.page_sizes[page - 1])
    return scale, page_dir() / f"{info.key}-p{page}-s{scale:.4f}.png"


def render_scale(name: str, page: int, width: float, height: float) -> float:
    """Pixels per PDF unit for a page of `width` x `height` units (see the module's notes)."""
    if min(width, height) <= 0:
        raise InputError(f"Page {page} of {name} has no size; the PDF is damaged.")
    if max(width, height) > MAX_PAGE_POINTS:
        raise InputError(
            f"Page {page} of {name} is {width / 72:,.0f} x {height / 72:,.0f} inches; pages of "
            f"up to {MAX_PAGE_POINTS // 72} inches a side are taken."
        )
    # Rounded down (4 decimals name the file): never a pixel above RENDER_LONG_SIDE.
    return math.floor(min(RENDER_LONG_SIDE / max(width, height), MAX_RENDER_SCALE) * 1e4) / 1e4


def render_pages(path: str | Path, pages: list[tuple[int, float, Path]]) -> None:
    """Render (page, scale, file) each to its PNG file (written whole or not at all), in one
    process (starting one costs as much as rendering a page)."""
    try:
        pdf_renderer.run(
            "render",
            RENDER_TIMEOUT_S,
            path=os.path.abspath(path),
            pages=[(page, scale, os.path.abspath(target)) for page, scale, target in pages],
        )
    except (pdf_renderer.TooSlow, pdf_renderer.TooBig) as error:
        # The pages are rendered in order: the first one without its file stopped it.
        page = next((page for page, _, target in pages if not target.is_file()), pages[-1][0])
        raise InputError(limit_message(error, f"Page {page} of {Path(path).name}")) from None
    sweep(page_dir(), PAGE_DIR_MAX_BYTES, keep={target for _, _, target in pages})


def limit_message(error: pdf_renderer.TooSlow | pdf_renderer.TooBig, what: str) -> str:
    """What to say when `what` ("Page 3 of a.pdf") went beyond the renderer's limits."""
    if isinstance(error, pdf_renderer.TooSlow):
        return (
            f"{what} took too long to render (the new pages of a question may take "
            f"{RENDER_TIMEOUT_S:g} s in all). The PDF may be damaged or made to be slow: try "
            f"other pages, or fewer at once."
        )
    return (
        f"{what} took too much memory to render (the renderer may take "
        f"{pdf_renderer.RENDER_MEMORY_BYTES / 1024**2:,.0f} MB). The PDF may be damaged or "
        f"made to exhaust it: try other pages."
    )


def sweep(folder: Path, max_bytes: int, keep: Collection[Path] = ()) -> None:
    """Delete the oldest files of `folder` until it holds at most `max_bytes` (never `keep`,
    nor a file written in the last RECENT_S, nor one still being written), and partial files
    older than RECENT_S (left by a renderer that died while writing one)."""
    files, total = [], 0
    recent = time.time_ns() - RECENT_S * 10**9
    for entry in os.scandir(folder):
        try:
            status = entry.stat()
        except OSError:  # deleted meanwhile
            continue
        if entry.name.endswith(".part"):
            if status.st_mtime_ns < recent:  # no renderer lives that long (RENDER_TIMEOUT_S)
                Path(entry.path).unlink(missing_ok=True)
                continue
        elif status.st_mtime_ns < recent:
            files.append((status.st_mtime_ns, status.st_size, entry.path))
        total += status.st_size
    for _, size, name in sorted(files):
        if total <= max_bytes:
            break
        if Path(name) not in keep:
            Path(name).unlink(missing_ok=True)
            total -= size
