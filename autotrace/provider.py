"""The installed pipeline: configuration applied, processors, sampling bound, shutdown.

``config.py`` stays pure data; this module holds the side effects of
installing a configuration (a new store, exporters started and stopped, the
limits and the root sampling bound the hot path reads from ``_state``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import _metrics, _resource
from . import attributes as _attributes
from ._errors import internal_error, is_foreign
from ._limits import LIMITS
from ._state import _S, CaptureProcessor, ask, each_within
from ._tail import TailSampling
from .store import TraceStore

if TYPE_CHECKING:
    from ._model import SpanContext
    from .config import TraceConfig
    from .sampling import Sampler

__all__ = ["apply_config", "force_sampling", "shutdown"]

logger = logging.getLogger("autotrace")

_TWO64 = 1 << 64


def apply_config(config: TraceConfig) -> TraceStore:
    """Install ``config``: sampler, limits, resource, store and exporters."""
    global _rate_said
    with _S.lock:
        old_store = _S.store
        old_processors = [p for p in _S.processors if not isinstance(p, CaptureProcessor)]
        captures = [p for p in _S.processors if isinstance(p, CaptureProcessor)]
        store = TraceStore(config.max_traces, max_spans_per_trace=config.max_spans_per_trace)
        processors = [_processor_for(e) for e in config.exporters]
        LIMITS.max_attributes = config.max_attributes
        LIMITS.max_events = config.max_events
        LIMITS.max_links = config.max_links
        LIMITS.max_attribute_length = config.max_attribute_length
        LIMITS.max_spans_per_trace = config.max_spans_per_trace
        _rate_said = False  # the new rule is logged at the next root span
        LIMITS.max_name_length = config.max_name_length
        LIMITS.max_sequence_length = config.max_sequence_length
        _S.config = config
        _resource.install(config.resource())
        _S.enabled = config.enabled
        _metrics.configure(config.metrics, config.metrics_max_series)
        _S.sampler = config.make_sampler()
        _S.tail = (
            TailSampling(
                config.keep_errors, config.keep_slower_than, config.max_provisional_spans, config.max_spans_per_trace
            )
            if config.keep_errors or config.keep_slower_than is not None
            else None
        )
        _S.store = store
        # Nothing already recorded is lost by reconfiguring: once installed, the
        # new store takes over the old one's trace buffers (traces still open
        # keep filling them), and again at each read for any late arrival.
        store._adopt(old_store)
        _S.processors = tuple(processors + captures)
        _update_bound()
    for proc in old_processors:
        if proc in processors:  # passed to configure() again: still in use
            continue
        try:
            proc.shutdown(5.0)
        except Exception as exc:
            internal_error("shutting down an old exporter", exc)
    return store


def _processor_for(exporter: Any) -> Any:
    if hasattr(exporter, "on_end"):
        return exporter
    from .export import BatchSpanProcessor

    return BatchSpanProcessor(exporter)


def _update_bound() -> None:
    sampler = _S.sampler
    bound = getattr(sampler, "root_bound", None)
    _S.custom = None
    if not _S.enabled:
        _S.bound = 0
    elif _S.force:
        _S.bound = _TWO64
    elif bound is None:
        _S.bound = _TWO64  # every root goes on to ask the custom sampler
        _S.custom = sampler
    elif _S.tail is not None and bound < _TWO64:
        # Tail sampling: every root goes through tracer.start(), which records
        # those the head rule leaves out provisionally (_tail.py).
        _S.tail.bound = bound
        _S.bound = _TWO64
        _S.custom = _S.tail
    else:
        _S.bound = bound
    if _S.enabled and not _S.force and not _rate_said and sampler is not None:
        # The first root span takes the custom-sampler path (no cost on the hot path
        # afterwards): it logs the sampling rule once, then puts the fast path back.
        _S.bound = _TWO64
        _S.custom = _FirstRoot(_S.custom or sampler)


_rate_said = False  # the first root span since configure() has logged the sampling rule


class _FirstRoot:
    """The sampler for the first root span after configure(): says at DEBUG what is sampled, then steps aside."""

    __slots__ = ("sampler",)

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        """The wrapped sampler's decision; the first call logs it with the rule in force."""
        global _rate_said
        sampled = ask(self.sampler, trace_id, parent, name)
        with _S.lock:
            if _S.custom is not self:  # another thread was first, or configure() ran meanwhile
                return sampled
            _rate_said = True
            _update_bound()
        bound = getattr(self.sampler, "root_bound", None)
        if bound is None:
            rule = f"new traces are sampled by {_attributes.safe_str(self.sampler)}"
        else:
            rate = bound / _TWO64
            rule = f"recording {rate * 100:.4g}% of new traces (sample rate {rate:.4g})"
        try:
            logger.debug(
                "autotrace: %s; AUTOTRACE_SAMPLE_RATE or configure(sample_rate=...) sets it; the first root span %r "
                "was %s",
                rule,
                name,
                "sampled" if sampled else "not sampled",
            )
        except Exception as error:  # a broken logging handler must not break the host
            if is_foreign(error):
                raise
        return sampled


def force_sampling(delta: int) -> None:
    """Raise or lower the count of active capture_spans() blocks."""
    with _S.lock:
        _S.force = max(0, _S.force + delta)
        _update_bound()


def shutdown(timeout: float | None = 5.0) -> bool:
    """Flush and stop every exporter; spans still go to the in-memory store afterwards."""
    with _S.lock:
        procs = [p for p in _S.processors if not isinstance(p, CaptureProcessor)]
        _S.processors = tuple(p for p in _S.processors if isinstance(p, CaptureProcessor))
    # One deadline for all; past it, each processor is still told to stop (with 0 s to do so).
    return each_within(procs, "shutdown", timeout)
