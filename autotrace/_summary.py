"""Trace summaries, their filters and per-span-name statistics: pure functions over stored spans.

The server's ``GET /traces/summary`` and ``GET /stats`` are thin routes over
these; nothing here knows about HTTP, except that a bad filter value raises a
``ValueError`` whose message names the parameter (the route answers it as a 400).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SUMMARY_PARAMS = ("limit", "q", "attr", "min_duration", "max_duration", "status", "service")
"""Query parameters GET /traces/summary takes."""

SAMPLING_KEY = "autotrace.sampling.kept"
"""The root attribute tail sampling sets to why it kept a trace (``"error"`` or ``"slow"``)."""

# Root attributes a summary carries first (when present): what tells requests apart in a list.
KEY_ATTRIBUTES = (
    "http.request.method",
    "http.route",
    "url.path",
    "http.response.status_code",
    "rpc.method",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "llm.model_name",
    "openinference.span.kind",
    "error.type",
)
MAX_KEY_ATTRIBUTES = 8  # root attributes in one summary record
MAX_VALUE_CHARS = 200  # characters of one attribute value in a summary record
MAX_QUERY_CHARS = 500  # characters of q= and of one attr= filter
MAX_ATTR_FILTERS = 16
_ERROR = 2  # StatusCode.ERROR


def _text(value: Any) -> str:
    """An attribute value as the text a filter compares with (booleans as true/false, lists joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _short(value: Any) -> Any:
    """A value for a summary record: numbers and booleans as they are, anything else as bounded text."""
    if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
        return value
    text = _text(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


@dataclass
class TraceSummary:
    """One trace reduced to what the list shows and filters on."""

    trace_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    sampling: str | None
    attributes: dict[str, Any]
    haystack: str = field(repr=False)  # names, attribute keys and values, id: lower case, for q=
    pairs: frozenset[tuple[str, str]] = field(repr=False)  # (key, value text) of every span's attributes

    @property
    def duration_ns(self) -> int:
        """Wall time from the first span's start to the last span's end, in nanoseconds."""
        return max(0, self.end_ns - self.start_ns)

    def record(self) -> dict[str, Any]:
        """The JSON record of GET /traces/summary."""
        return {
            "trace_id": self.trace_id,
            "name": self.name,
            "service": self.service,
            "start_unix_nano": str(self.start_ns),
            "duration": self.duration_ns / 1e9,
            "duration_ns": self.duration_ns,
            "span_count": self.span_count,
            "error_count": self.error_count,
            "sampling": self.sampling,
            "attributes": self.attributes,
        }


def _attrs(span: Any) -> Mapping[str, Any]:
    attrs = span._attrs
    return attrs if attrs is not None else {}


def _root(spans: Sequence[Any]) -> Any:
    """The root span: one without a parent (the earliest), else the earliest whose parent is not here."""
    ids = {s._span_id for s in spans}
    best = None
    for s in spans:
        parent = s._parent_id
        if parent is not None and parent in ids:
            continue
        rank = (parent is not None, s._start)
        if best is None or rank < best[0]:
            best = (rank, s)
    return best[1] if best is not None else spans[0]


def summarize(spans: Sequence[Any], service: str) -> TraceSummary:
    """The summary of one trace (a non-empty list of ended spans)."""
    root = _root(spans)
    start = min(s._start for s in spans)
    end = max((s._end if s._end is not None else s._start) for s in spans)
    errors = 0
    words: list[str] = []
    pairs: set[tuple[str, str]] = set()
    for s in spans:
        if s._status.code == _ERROR:
            errors += 1
        words.append(s._name)
        for key, value in _attrs(s).items():
            text = _text(value)
            words.append(key)
            words.append(text)
            pairs.add((key, text))
    root_attrs = _attrs(root)
    chosen: dict[str, Any] = {}
    for key in KEY_ATTRIBUTES:
        if key in root_attrs:
            chosen[key] = _short(root_attrs[key])
    for key, value in root_attrs.items():
        if len(chosen) >= MAX_KEY_ATTRIBUTES:
            break
        if key not in chosen and key != SAMPLING_KEY:
            chosen[key] = _short(value)
    kept = root_attrs.get(SAMPLING_KEY)
    trace_id = f"{spans[0]._trace_id:032x}"
    words.append(trace_id)
    words.append(service)
    return TraceSummary(
        trace_id=trace_id,
        name=root._name,
        service=service,
        start_ns=start,
        end_ns=end,
        span_count=len(spans),
        error_count=errors,
        sampling=None if kept is None else _text(kept),
        attributes=chosen,
        haystack="\n".join(words).lower(),
        pairs=frozenset(pairs),
    )


class SummaryCache:
    """Summaries of the stored traces, each made once: a trace is summarized again only when it changed.

    Keyed like the server's ETag (trace id, span count, last span): ended
    spans do not change. Only the traces of the last call are kept, so it
    holds at most one summary per stored trace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int, int], TraceSummary] = {}

    def summaries(self, traces: Iterable[Sequence[Any]], service: str) -> list[TraceSummary]:
        """One summary per non-empty trace, in the order given."""
        with self._lock:
            old = self._cache
        new: dict[tuple[int, int, int], TraceSummary] = {}
        out = []
        for spans in traces:
            if not spans:
                continue
            key = (spans[0]._trace_id, len(spans), spans[-1]._span_id)
            summary = old.get(key)
            if summary is None or summary.service != service:
                summary = summarize(spans, service)
            new[key] = summary
            out.append(summary)
        with self._lock:
            self._cache = new
        return out


@dataclass(frozen=True)
class Filters:
    """The filters of GET /traces/summary, parsed."""

    q: str = ""  # lower case; every whitespace-separated word must occur
    attrs: tuple[tuple[str, str], ...] = ()
    min_ns: int | None = None
    max_ns: int | None = None
    errors_only: bool | None = None  # True: status=error, False: status=ok, None: any
    service: str | None = None

    def match(self, t: TraceSummary) -> bool:
        """True when the trace passes every filter."""
        if self.errors_only is not None and (t.error_count > 0) != self.errors_only:
            return False
        if self.service is not None and t.service != self.service:
            return False
        d = t.duration_ns
        if self.min_ns is not None and d < self.min_ns:
            return False
        if self.max_ns is not None and d > self.max_ns:
            return False
        if self.q and not all(word in t.haystack for word in self.q.split()):
            return False
        return all(pair in t.pairs for pair in self.attrs)


def _seconds(name: str, text: str | None) -> int | None:
    """A duration filter in seconds (a finite number >= 0) as nanoseconds."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise ValueError(f"{name} must be a number of seconds >= 0 (e.g. 0.25); got {text[:40]!r}")
    return round(value * 1e9)


def parse_filters(
    q: str | None = None,
    attrs: Sequence[str] = (),
    min_duration: str | None = None,
    max_duration: str | None = None,
    status: str | None = None,
    service: str | None = None,
) -> Filters:
    """The filters from their query-string texts; ``ValueError`` naming the parameter when one is bad."""
    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise ValueError(f"q must be at most {MAX_QUERY_CHARS} characters; got {len(q)}")
    if len(attrs) > MAX_ATTR_FILTERS:
        raise ValueError(f"attr may be given at most {MAX_ATTR_FILTERS} times; got {len(attrs)}")
    pairs = []
    for text in attrs:
        key, eq, value = text.partition("=")
        if not eq or not key.strip() or len(text) > MAX_QUERY_CHARS:
            raise ValueError(f"attr must be key=value (at most {MAX_QUERY_CHARS} characters); got {text[:40]!r}")
        pairs.append((key.strip(), value))
    low = _seconds("min_duration", min_duration)
    high = _seconds("max_duration", max_duration)
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_duration ({min_duration}) is larger than max_duration ({max_duration})")
    errors_only = None
    if status is not None:
        folded = status.strip().lower()
        if folded not in ("error", "ok"):
            raise ValueError(f"status must be error or ok; got {status[:40]!r}")
        errors_only = folded == "error"
    if service is not None and not service:
        raise ValueError("service must not be empty")
    return Filters(
        q=(q or "").strip().lower(),
        attrs=tuple(pairs),
        min_ns=low,
        max_ns=high,
        errors_only=errors_only,
        service=service,
    )


def select(summaries: Sequence[TraceSummary], filters: Filters, limit: int | None) -> tuple[list[TraceSummary], int]:
    """The newest ``limit`` summaries (all by default) that match, newest first, and how many matched."""
    matched = [t for t in reversed(summaries) if filters.match(t)]
    if limit is None:
        return matched, len(matched)
    return matched[:limit], len(matched)


# -- per-span-name statistics --------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of non-empty sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _self_times(spans: Sequence[Any]) -> list[int]:
    """Each span's own time: its duration minus the union of its children's intervals (clipped to it)."""
    index = {s._span_id: i for i, s in enumerate(spans)}
    kids: dict[int, list[tuple[int, int]]] = {}
    for s in spans:
        p = index.get(s._parent_id) if s._parent_id is not None else None
        if p is not None and p != index[s._span_id]:
            end = s._end if s._end is not None else s._start
            kids.setdefault(p, []).append((s._start, end))
    out = []
    for i, s in enumerate(spans):
        start = s._start
        end = s._end if s._end is not None else start
        covered = 0
        cursor = start
        for a, b in sorted(kids.get(i, ())):
            a, b = max(a, cursor), min(b, end)
            if b > a:
                covered += b - a
                cursor = b
        out.append(max(0, end - start - covered))
    return out


def span_stats(traces: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """GET /stats over stored traces: one row per span name, seconds, with the slowest trace holding it."""
    per_name: dict[str, dict[str, Any]] = {}
    trace_count = 0
    span_count = 0
    for spans in traces:
        if not spans:
            continue
        trace_count += 1
        span_count += len(spans)
        selfs = _self_times(spans)
        for s, own in zip(spans, selfs, strict=True):
            end = s._end if s._end is not None else s._start
            d = max(0, end - s._start)
            row = per_name.get(s._name)
            if row is None:
                row = per_name[s._name] = {"d": [], "self": [], "errors": 0, "slowest": (-1, "", "")}
            row["d"].append(d)
            row["self"].append(own)
            if s._status.code == _ERROR:
                row["errors"] += 1
            if d > row["slowest"][0]:
                row["slowest"] = (d, f"{s._trace_id:032x}", f"{s._span_id:016x}")
    rows = []
    for name, row in per_name.items():
        ds = sorted(row["d"])
        selfs = sorted(row["self"])
        rows.append(
            {
                "name": name,
                "source": "stored",
                "count": len(ds),
                "errors": row["errors"],
                "p50": percentile(ds, 50) / 1e9,
                "p95": percentile(ds, 95) / 1e9,
                "p99": percentile(ds, 99) / 1e9,
                "max": ds[-1] / 1e9,
                "total": sum(ds) / 1e9,
                "self_time": sum(selfs) / 1e9,
                "self_time_p50": percentile(selfs, 50) / 1e9,
                "self_time_max": selfs[-1] / 1e9,
                "slowest_trace_id": row["slowest"][1],
                "slowest_span_id": row["slowest"][2],
            }
        )
    rows.sort(key=lambda r: (-r["self_time"], r["name"]))
    return {"source": "stored", "traces": trace_count, "spans": span_count, "names": rows}


def merge_stats(stored: dict[str, Any], every: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """GET /stats: ``span_stats`` of the stored traces with each name's figures over every call put in.

    A row's ``count``, ``errors``, ``p50``, ``p95``, ``p99`` and ``max`` are over
    every call (``source: "all"``) when the metrics have the name, else over
    the stored spans (``source: "stored"``: metrics off, or spans received over
    OTLP); ``stored_count``, ``total``, the self times and the slowest trace are
    always over the stored traces.
    """
    rows: dict[str, dict[str, Any]] = {}
    for row in stored["names"]:
        row = dict(row)
        row["stored_count"] = row["count"]
        rows[row["name"]] = row
    for name, figures in every.items():
        row = rows.get(name)
        if row is None:
            row = rows[name] = {
                "name": name,
                "stored_count": 0,
                "total": 0.0,
                "self_time": 0.0,
                "self_time_p50": 0.0,
                "self_time_max": 0.0,
                "slowest_trace_id": "",
                "slowest_span_id": "",
            }
        row.update(figures)
        row["source"] = "all"
    names = sorted(rows.values(), key=lambda r: (-r["self_time"], -r["count"], r["name"]))
    source = "all" if every else "stored"
    return {"source": source, "traces": stored["traces"], "spans": stored["spans"], "names": names}
