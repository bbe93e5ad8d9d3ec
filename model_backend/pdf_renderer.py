"""PDFium on untrusted PDFs, each call in a process of its own, with a time and a memory limit.

A crafted page (forms nested in forms, an endless content stream) can keep PDFium busy for
minutes or make it take gigabytes, and PDFium cannot be interrupted. So the server process never
calls PDFium: each measurement of a document and each rendering of a page runs in a fresh Python
process (`python -m model_backend.pdf_renderer`, the request on its stdin, started by
subprocess, which execs it: no fork of the threaded server) whose address space is limited
(RLIMIT_AS: RENDER_MEMORY_BYTES beyond what it holds once started), and which is killed when its
time is up or its request is cancelled. A page that needs more memory ends its process (a
MemoryError, or PDFium aborting) and only that page is refused. The child gets no more than it
needs: the project's folder as its working directory (`-m` puts it first on its import path, so
nothing in the server's working directory can stand in for the code), a few environment
variables (not the server's tokens), no core dumps, and the request on stdin (a command line is
visible to every user in `ps`).

A fresh process per call is the simplest thing that stays right when one is killed (a pool's
worker would have to be replaced). Starting one (Python, pypdfium2 and Pillow) costs about
0.2 s, as much as rendering a page; a follow-up renders nothing again (model_backend.documents
keeps the pages).
Linux: RLIMIT_AS is not enforced on macOS, where only the time limit applies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pypdfium2 as pdfium

from model_backend.cancel import raise_if_cancelled
from model_backend.errors import InputError

log = logging.getLogger(__name__)

# Memory the renderer may take beyond what it holds once started (Python, PDFium: ~40 MB). A
# page rendered at 1,792 pixels takes well under 100 MB, even one holding a 144-megapixel
# image (PDFium scales it down as it decodes it).
RENDER_MEMORY_BYTES = 1024**3
MAX_RENDERERS = 4  # processes at once: at most this many times RENDER_MEMORY_BYTES
POLL_S = 0.1  # how often a waiting request looks whether it was cancelled
STDERR_TAIL_BYTES = 4096  # what the server keeps of a child's stderr, to log why it died
# All the child gets of the server's environment (besides its import path): no tokens.
CHILD_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

RENDERERS = threading.BoundedSemaphore(MAX_RENDERERS)
# The child starts with -S (the site hooks of .pth files cost more than its own imports) and
# this server's import path instead, less its relative entries ("": whatever folder it is in).
CHILD_IMPORT_PATH = os.pathsep.join(
    dict.fromkeys([str(PROJECT_ROOT), *(entry for entry in sys.path if os.path.isabs(entry))])
)


class TooSlow(InputError):
    """The process did not finish in time (it has been killed)."""


class TooBig(InputError):
    """The process ran out of memory, or PDFium failed in it."""


def run(task: str, timeout: float, **arguments) -> object:
    """`task` ("measure" or "render", below) run in a fresh process; its result (JSON).

    Raises the InputError the task raised (a password, a damaged file...), TooSlow after
    `timeout` seconds, TooBig if the process died (out of memory), RequestCancelled if the
    request was cancelled meanwhile (the process is killed). Paths must be absolute.
    """
    if timeout <= 0:
        raise TooSlow(task)
    while not RENDERERS.acquire(timeout=POLL_S):
        raise_if_cancelled()
    try:
        return _run(task, timeout, arguments)
    finally:
        RENDERERS.release()


def child_environment() -> dict[str, str]:
    """The child's environment: CHILD_ENVIRONMENT and its import path, nothing else."""
    kept = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
    return {**kept, "PYTHONPATH": CHILD_IMPORT_PATH}


def _run(task: str, timeout: float, arguments: dict) -> object:
    request = json.dumps(
        {"task": task, "arguments": arguments, "memory": RENDER_MEMORY_BYTES, "cpu_s": timeout}
    ).encode()
    deadline = time.monotonic() + timeout
    # Its stderr is read aside, keeping the tail (communicate would keep all of it).
    stderr, child_stderr = os.pipe()
    said = bytearray()
    reader = threading.Thread(target=keep_tail, args=(stderr, said), daemon=True)
    reader.start()
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", "-m", "model_backend.pdf_renderer"],
            cwd=PROJECT_ROOT,
            env=child_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=child_stderr,
        )
    finally:
        os.close(child_stderr)  # the child has its own: the reader sees the end when it ends
    try:
        while True:
            try:
                output, _ = process.communicate(
                    request, timeout=max(0.0, min(POLL_S, deadline - time.monotonic()))
                )
                break
            except subprocess.TimeoutExpired:
                request = None  # sent (or being sent) already
                raise_if_cancelled()
                if time.monotonic() >= deadline:
                    raise TooSlow(task) from None
    finally:
        if process.returncode is None:  # out of time, or cancelled: killed and reaped
            process.kill()
            process.communicate()
        reader.join(timeout=1)
        # A child killed (or out of CPU time) while saving a page leaves its partial file.
        for _, _, target in arguments.get("pages", ()):
            Path(partial_file(target, process.pid)).unlink(missing_ok=True)
    try:
        reply = json.loads(output)
    except ValueError:  # it died without a word: out of memory, or PDFium aborted
        log.warning(
            "PDFium process for %s ended with %s: %s",
            task,
            process.returncode,
            bytes(said).decode(errors="replace"),
        )
        raise TooBig(task) from None
    if "refused" in reply:
        raise InputError(reply["refused"])
    if "memory" in reply:
        raise TooBig(task)
    return reply["result"]


def keep_tail(pipe: int, tail: bytearray) -> None:
    """Read the pipe `pipe` to its end (then close it), keeping its last STDERR_TAIL_BYTES in
    `tail`."""
    with open(pipe, "rb", buffering=0) as stream:
        for chunk in iter(lambda: stream.read(STDERR_TAIL_BYTES), b""):
            tail += chunk
            del tail[:-STDERR_TAIL_BYTES]


def partial_file(target: str, pid: int) -> str:
    """Where the process `pid` writes the page `target` before it is whole."""
    return f"{target}.{pid}.part"


# -- in the child process ----------------------------------------------------------------------


def open_pdf(path: str) -> pdfium.PdfDocument:
    """The document, or InputError saying why it cannot be read."""
    name = Path(path).name
    # PDFium opens no document without pages, and then leaves its last error as it was: it is
    # set to "file error" first (opening no file), so that a code left from an earlier
    # document is not taken for this one's.
    pdfium.raw.FPDF_LoadDocument(b"", None)
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        code = getattr(error, "err_code", None)
        if code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise InputError(
                f"The PDF {name} is protected by a password. Please remove the password (for "
                f"example by printing it to a new PDF) and upload it again."
            ) from None
        if code == pdfium.raw.FPDF_ERR_SECURITY:
            raise InputError(f"The PDF {name} uses an encryption PDFium cannot open.") from None
        if code == pdfium.raw.FPDF_ERR_FILE:  # not set by this document (see above)
            raise InputError(f"The PDF {name} has no pages.") from None
        raise InputError(f"The file {name} is not a PDF, or it is damaged.") from None


def measure(path: str, max_pages: int) -> list[list[float]]:
    """The (width, height) of each page, in PDF units."""
    document = open_pdf(path)
    try:
        pages = len(document)
        # Refused before anything is measured or kept: a few bytes of PDF can claim a million
        # pages.
        if pages > max_pages:
            raise InputError(
                f"The PDF {Path(path).name} has {pages} pages; documents of up to {max_pages} "
                f"pages are taken. Please split it and upload the part you want to ask about."
            )
        return [list(document.get_page_size(i)) for i in range(pages)]
    except pdfium.PdfiumError:  # a page the page tree promises is not there
        raise InputError(
            f"The PDF {Path(path).name} is damaged: some of its pages cannot be read."
        ) from None
    finally:
        document.close()


def render(path: str, pages: list[tuple[int, float, str]]) -> None:
    """Render each (page numbered from 1, scale, file) in order to its file, a PNG written whole
    or not at all."""
    document = open_pdf(path)
    document.init_forms()  # filled-in form fields are part of the page
    for page, scale, target in pages:
        try:
            image = document[page - 1].render(scale=scale, may_draw_forms=True).to_pil()
        except pdfium.PdfiumError:
            raise InputError(f"Page {page} of {Path(path).name} could not be rendered.") from None
        partial = partial_file(target, os.getpid())
        try:
            image.convert("RGB").save(partial, "PNG", compress_level=3)
            os.replace(partial, target)  # another request may render it too: either is right
        finally:
            Path(partial).unlink(missing_ok=True)


TASKS = {"measure": measure, "render": render}


def address_space() -> int:
    """This process's address space now, in bytes (0 where there is no /proc)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except OSError:
        return 0


def child_main(request: str) -> None:
    """Run one request (JSON, from `run`) and print its outcome as JSON."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no dump of an untrusted file's pages
    request = json.loads(request)
    limit = address_space() + request["memory"]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # A second stop, should the server die without killing it: CPU time beyond the wall clock.
    cpu = math.ceil(request["cpu_s"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    try:
        reply = {"result": TASKS[request["task"]](**request["arguments"])}
    except InputError as error:
        reply = {"refused": str(error)}
    except MemoryError:
        reply = {"memory": True}
    except Exception as error:  # a file PDFium or Pillow chokes on: this request only
        name = Path(request["arguments"]["path"]).name
        reply = {"refused": f"The PDF {name} could not be read ({type(error).__name__})."}
    sys.stdout.write(json.dumps(reply))


if __name__ == "__main__":
    child_main(sys.stdin.read())
