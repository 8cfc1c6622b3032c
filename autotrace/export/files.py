"""JSON Lines files of OTLP/JSON requests: writing them, reading them back into a store.

Each line is one ``ExportTraceServiceRequest``, so a file can be replayed to a
collector line by line, or loaded with ``load_jsonl_into`` and served by ``/traces``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _otlp_json
from .._errors import internal_error
from .._receiver import decode_document, store_spans
from .._resource import current as resource_attributes
from ..spans import Span
from ._base import Exporter

if TYPE_CHECKING:
    from ..store import TraceStore

__all__ = ["FileExporter", "decode_spans", "load_jsonl_into", "read_jsonl"]

logger = logging.getLogger("autotrace")


class FileExporter(Exporter):
    """Appends one OTLP/JSON ``ExportTraceServiceRequest`` per line to ``path``, one line per batch.

    Each line goes out in a single ``write`` on a file opened with O_APPEND, so
    threads and forked processes sharing the file never interleave lines. A
    write that fails part-way (a full disk, a file size limit) is cut back off
    the file; if that cannot be done safely, the next line starts on a fresh
    line instead of being glued to the torn one. Either way the batch is
    counted failed, and the lines before and after it stay readable.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise ValueError(f"path must be a file path; got {path!r}") from None
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path must be a non-empty file path; got {path!r}")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder of {self.path!r} does not exist")
        if os.path.isdir(self.path):
            raise ValueError(f"{self.path!r} is a folder, not a file")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._torn = False  # a torn line may end the file: the next line starts with a newline
        self._counts = {"exported": 0, "failed": 0}

    def export(self, spans: Sequence[Span], timeout: float | None = None) -> bool:
        """Append ``spans`` as one line; True once the line is written."""
        if not spans:
            return True
        try:
            data = _otlp_json.encode(spans, resource_attributes()) + b"\n"
            with self._lock:
                if self._fd is None:
                    self._fd = _open_append(self.path)
                self._write(self._fd, b"\n" + data if self._torn else data)
        except Exception as exc:
            internal_error(f"file export to {self.path}", exc)
            self._counts["failed"] += len(spans)
            return False
        self._counts["exported"] += len(spans)
        return True

    def _write(self, fd: int, data: bytes) -> None:
        """Write ``data`` whole, or leave no torn line behind (called under the lock)."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                written = os.write(fd, view[done:])
                if written <= 0:
                    raise OSError(f"write() wrote {written} bytes")
                done += written
        except BaseException:
            if done:
                self._cut(fd, view[:done])
            raise
        self._torn = False

    def _cut(self, fd: int, part: memoryview) -> None:
        """Remove the ``part`` of a line a failed write left at the end of the file.

        Only when the file still ends with exactly those bytes: another process
        appending meanwhile owns what follows, and must not lose it. Otherwise
        the torn line stays, and the next write starts on a fresh line.
        """
        self._torn = True
        try:
            end = os.fstat(fd).st_size
            start = end - len(part)
            if start >= 0 and os.pread(fd, len(part), start) == part:
                os.ftruncate(fd, start)
                self._torn = False
        except OSError:
            pass

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the file (a later export opens it again)."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def after_fork(self) -> None:
        """In a forked child: a new lock (and counters from zero)."""
        self._lock = threading.Lock()  # the descriptor is shared; O_APPEND keeps lines whole
        for key in self._counts:
            self._counts[key] = 0

    def stats(self) -> dict[str, int]:
        """Counters: spans written and spans that could not be written."""
        return dict(self._counts)

    def __repr__(self) -> str:
        return f"FileExporter({self.path!r})"


def _open_append(path: str) -> int:
    """The file opened for appending; readable too when allowed, so a torn write can be checked and cut."""
    flags = os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags | os.O_RDWR, 0o644)
    except PermissionError:
        return os.open(path, flags | os.O_WRONLY, 0o644)


def read_jsonl(
    path: str | os.PathLike[str], *, strict: bool = False, bad_lines: list[tuple[int, str]] | None = None
) -> list[dict[str, Any]]:
    """The OTLP/JSON requests in a JSON Lines file, one dict per non-blank line.

    A line that is not a request (a torn write, a stray line) is skipped, added to
    ``bad_lines`` as ``(line number, reason)`` and logged once per call; the rest of
    the file is still read. ``strict=True`` raises ValueError at the first bad line.
    """
    return [doc for _, doc in _requests(path, strict, bad_lines)]


def load_jsonl_into(
    store: TraceStore,
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    bad_lines: list[tuple[int, str]] | None = None,
) -> int:
    """Rebuild the spans of a JSON Lines file into ``store``; returns how many were loaded.

    Bad lines, including requests whose spans cannot be rebuilt, are skipped as in ``read_jsonl``.
    """
    name = os.fspath(path)
    spans: list[Span] = []
    skipped: list[tuple[int, str]] = []
    for number, doc in _requests(path, strict, skipped, log=False):
        try:
            spans.extend(decode_spans(doc))
        except ValueError as exc:
            if strict:
                raise ValueError(f"{name}:{number}: {exc}") from None
            skipped.append((number, str(exc)))
    skipped.sort()
    _report(name, skipped, bad_lines)
    store_spans(store, spans)
    return len(spans)


def _requests(
    path: str | os.PathLike[str], strict: bool, bad_lines: list[tuple[int, str]] | None, *, log: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, request) for each good line; bad ones raise when strict, else go to ``bad_lines``."""
    name = os.fspath(path)
    out: list[tuple[int, dict[str, Any]]] = []
    skipped: list[tuple[int, str]] = []
    # Bytes, decoded line by line: one line of bad UTF-8 (a torn multi-byte character) spoils only itself.
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                doc = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problem = "not UTF-8"
            except json.JSONDecodeError as exc:
                problem = f"not JSON ({exc.msg})"
            except ValueError:
                # An integer of more than sys.get_int_max_str_digits() (4,300) digits: one bad line.
                problem = "a number too long to read"
            except RecursionError:
                problem = "nested too deeply"
            else:
                if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans", []), list):
                    problem = "not an OTLP ExportTraceServiceRequest"
            if problem is None:
                out.append((number, doc))
            elif strict:
                raise ValueError(f"{name}:{number}: {problem}")
            else:
                skipped.append((number, problem))
    if log:
        _report(name, skipped, bad_lines)
    elif bad_lines is not None:
        bad_lines.extend(skipped)
    return out


def _report(name: str, skipped: list[tuple[int, str]], bad_lines: list[tuple[int, str]] | None) -> None:
    """Hand the skipped lines to the caller and log them, once for the whole file."""
    if bad_lines is not None:
        bad_lines.extend(skipped)
    if skipped:
        shown = "; ".join(f"line {number}: {reason}" for number, reason in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        logger.warning("autotrace: %s: skipped %d bad lines (%s%s)", name, len(skipped), shown, more)


# -- OTLP/JSON back to spans ----------------------------------------------------------------


def decode_spans(doc: Mapping[str, Any]) -> list[Span]:
    """The spans of one OTLP/JSON request, rebuilt as finished ``Span`` objects; ValueError for a bad span.

    Each keeps the resource and scope it was written with, so encoding a rebuilt
    span gives back the span object it was read from. The decoder is the one
    ``POST /v1/traces`` uses.
    """
    decoded = decode_document(doc, require_name=False)
    if decoded.rejected:
        raise ValueError(decoded.message())
    return decoded.spans
