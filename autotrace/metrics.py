"""Metrics over every traced call, sampled or not: ``snapshot()``, ``reset()``, and the Prometheus text of ``/metrics``.

Every ``@traced`` call and ``span()`` block is timed (sampled or not) into a
histogram per span name, kind and status code; traced generators also record
time to first item, mean time per item after it, and items per stream. See the
README ("Metrics") for what each family means and how accurate it is.
"""

from __future__ import annotations

from typing import Any

from . import _errors, _metrics
from ._metrics import LE_SECONDS, Folded, Hist
from ._model import SpanKind
from ._state import _S

__all__ = ["prometheus_text", "reset", "snapshot", "stats_by_name"]

_STATUS = ("unset", "ok", "error")
_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def _kind_name(kind: int) -> str:
    try:
        return SpanKind(kind).name.lower()
    except ValueError:
        return str(kind)


def _hist_dict(h: Hist, bounds: tuple[float, ...], scale: float) -> dict[str, Any]:
    """One folded histogram as JSON: values divided by ``scale`` (1e9 for seconds)."""
    out: dict[str, Any] = {
        "count": h.count,
        "sum": h.sum / scale,
        "min": h.min / scale,
        "max": h.max / scale,
    }
    for key, q in _QUANTILES:
        out[key] = h.percentile(q) / scale
    out["buckets"] = [[bound, n] for bound, n in zip(bounds, h.le, strict=True)]
    return out


def _health() -> dict[str, Any]:
    """autotrace's own counters, read where they are kept (store, batch processors, failures)."""
    store = _S.store
    exporters: list[dict[str, Any]] = []
    queue_full = 0
    try:
        from .export.batch import live_processors

        seen: dict[str, int] = {}
        for proc in live_processors():
            label = type(proc.exporter).__name__
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label}#{seen[label]}"
            exporters.append(
                {"exporter": label, "exported": proc.exported, "failed": proc.failed, "dropped": proc.dropped}
            )
            queue_full += proc.dropped
    except Exception as exc:
        _errors.internal_error("metrics: exporter counters", exc)
    return {
        "spans_dropped": {"store_limit": store.dropped_spans, "export_queue_full": queue_full},
        "traces_evicted": store.evicted_traces,
        "exporters": exporters,
        "internal_errors": sum(_errors.COUNTS.values()),
        # Read off the "_other" series themselves (folded by the caller): every span counted
        # there, a decorator's calls included (it looks its series up once, not per call).
        "series_overflow": sum(
            hist.count for h in list(_metrics.M.series.values()) if h.name == _metrics.OTHER for hist in h.hists
        ),
    }


def snapshot() -> dict[str, Any]:
    """Every metric as a dict: ``spans`` (durations in seconds), ``streams``, ``health``, since start or ``reset()``."""
    spans: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    for h in _metrics.fold_all():
        kind = _kind_name(h.kind)
        for status, hist in zip(_STATUS, h.hists, strict=True):
            if hist.count:
                spans.append({"name": h.name, "kind": kind, "status_code": status, **_hist_dict(hist, LE_SECONDS, 1e9)})
        if h.stream is not None and h.stream[2].count:
            ttft, gap, items = h.stream
            streams.append(
                {
                    "name": h.name,
                    "kind": kind,
                    "time_to_first_item": _hist_dict(ttft, LE_SECONDS, 1e9),
                    "time_per_item": _hist_dict(gap, LE_SECONDS, 1e9),
                    "items": _hist_dict(items, tuple(float(b) for b in _metrics.ITEM_BUCKETS), 1.0),
                }
            )
    return {
        "enabled": _metrics.M.on,
        "since": _metrics.M.since,
        "max_series": _metrics.M.max_series,
        "spans": spans,
        "streams": streams,
        "health": _health(),
    }


def reset() -> None:
    """Forget every observation so far (the health counters are the store's and exporters' own)."""
    _metrics.reset()


def stats_by_name() -> dict[str, dict[str, Any]]:
    """Per span name over every call (all kinds and status codes): count, errors, p50/p95/p99 and max in seconds."""
    merged: dict[str, tuple[Hist, list[int]]] = {}
    for h in _metrics.fold_all():
        total, errors = merged.setdefault(h.name, (Hist(), [0]))
        for hist in h.hists:
            total.merge(hist)
        errors[0] += h.hists[2].count
    out: dict[str, dict[str, Any]] = {}
    for name, (total, errors) in merged.items():
        if not total.count:
            continue
        row: dict[str, Any] = {"name": name, "count": total.count, "errors": errors[0]}
        for key, q in _QUANTILES:
            row[key] = total.percentile(q) / 1e9
        row["max"] = total.max / 1e9
        out[name] = row
    return out


# -- Prometheus text exposition format 0.0.4 ------------------------------------------------


def _utf8(value: str) -> str:
    """``value`` made encodable: a lone surrogate (a name from undecodable bytes) as its ``\\udc80`` text."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _label(value: str) -> str:
    """A label value escaped as the format asks: backslash, double quote and newline (after ``_utf8``)."""
    return _utf8(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


def _histogram(
    lines: list[str], family: str, labels: list[tuple[str, str]], h: Hist, bounds: tuple[float, ...], scale: float
) -> None:
    for bound, n in zip(bounds, h.le, strict=True):
        lines.append(f"{family}_bucket{_labels([*labels, ('le', repr(float(bound)))])} {n}")
    lines.append(f"{family}_bucket{_labels([*labels, ('le', '+Inf')])} {h.count}")
    lines.append(f"{family}_sum{_labels(labels)} {_num(h.sum / scale)}")
    lines.append(f"{family}_count{_labels(labels)} {h.count}")


_HELP = {
    "autotrace_span_duration_seconds": "Duration of every traced call and span() block, sampled or not.",
    "autotrace_stream_time_to_first_item_seconds": "Per traced stream: time from its first resume to its first item.",
    "autotrace_stream_time_per_item_seconds": "Per traced stream of 2+ items: mean gap between items after the first.",
    "autotrace_stream_items": "Per traced stream: items it yielded.",
}


def prometheus_text() -> str:
    """Every metric in the Prometheus text exposition format 0.0.4."""
    # Two names the text shows alike (a lone surrogate and its "\\udc80" spelled out) are one series
    # there: merged, as the format allows each label set once.
    shown_as: dict[tuple[str, int], Folded] = {}
    for h in _metrics.fold_all():
        shown = (_utf8(h.name), h.kind)
        if shown in shown_as:
            shown_as[shown].add(h)
        else:
            shown_as[shown] = h
    found = list(shown_as.values())
    lines: list[str] = []
    family = "autotrace_span_duration_seconds"
    lines += [f"# HELP {family} {_HELP[family]}", f"# TYPE {family} histogram"]
    for h in found:
        for status, hist in zip(_STATUS, h.hists, strict=True):
            if hist.count:
                labels = [("span_name", h.name), ("span_kind", _kind_name(h.kind)), ("status_code", status)]
                _histogram(lines, family, labels, hist, LE_SECONDS, 1e9)
    streams = [h for h in found if h.stream is not None and h.stream[2].count]
    item_bounds = tuple(float(b) for b in _metrics.ITEM_BUCKETS)
    for index, family in enumerate(
        (
            "autotrace_stream_time_to_first_item_seconds",
            "autotrace_stream_time_per_item_seconds",
            "autotrace_stream_items",
        )
    ):
        lines += [f"# HELP {family} {_HELP[family]}", f"# TYPE {family} histogram"]
        for h in streams:
            assert h.stream is not None
            labels = [("span_name", h.name), ("span_kind", _kind_name(h.kind))]
            if index == 2:
                _histogram(lines, family, labels, h.stream[2], item_bounds, 1.0)
            else:
                _histogram(lines, family, labels, h.stream[index], LE_SECONDS, 1e9)
    health = _health()

    def counter(name: str, help_text: str, samples: list[tuple[list[tuple[str, str]], int]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        for labels, value in samples:
            lines.append(f"{name}{_labels(labels) if labels else ''} {value}")

    counter(
        "autotrace_spans_dropped_total",
        "Sampled spans dropped, by reason.",
        [([("reason", reason)], n) for reason, n in health["spans_dropped"].items()],
    )
    counter(
        "autotrace_traces_evicted_total",
        "Whole traces evicted from the in-memory store.",
        [([], health["traces_evicted"])],
    )
    for key, text in (
        ("exported", "Spans delivered, per exporter."),
        ("failed", "Spans an export failed for, per exporter."),
        ("dropped", "Spans dropped because the export queue was full, per exporter."),
    ):
        counter(
            f"autotrace_exporter_spans_{key}_total",
            text,
            [([("exporter", e["exporter"])], e[key]) for e in health["exporters"]],
        )
    counter(
        "autotrace_internal_errors_total",
        "Failures inside autotrace (logged once each).",
        [([], health["internal_errors"])],
    )
    counter(
        "autotrace_metrics_series_overflow_total",
        'Spans counted under span_name="_other": their name/kind came past the series cap.',
        [([], health["series_overflow"])],
    )
    return "\n".join(lines) + "\n"
