"""Head samplers: the same decisions as OpenTelemetry's built-in samplers.

A sampler is any object with ``should_sample(trace_id, parent, name) -> bool``.
The built-in ratio samplers also expose ``root_bound``, which lets the tracer
make the root decision with one integer comparison instead of a call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._model import SpanContext

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "ParentBased",
    "Sampler",
    "TraceIdRatioBased",
    "ratio_bound",
    "sampler_from_name",
]

_LOW64 = (1 << 64) - 1
SAMPLER_NAMES = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@runtime_checkable
class Sampler(Protocol):
    """Decides whether a new trace (or a child of a remote parent) is recorded."""

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        """True to record the span; ``parent`` is None at a root."""
        ...


def ratio_bound(rate: float) -> int:
    """OpenTelemetry's bound: a trace is sampled when its low 64 bits are below it."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample rate must be between 0 and 1; got {rate!r}")
    return round(rate * (1 << 64))


class TraceIdRatioBased:
    """Samples ``rate`` of traces, decided from the trace id alone (as OpenTelemetry)."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.root_bound = ratio_bound(self.rate)

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        """Same trace id, same answer, in every process that uses the same rate."""
        return (trace_id & _LOW64) < self.root_bound

    def __repr__(self) -> str:
        return f"TraceIdRatioBased({self.rate})"


ALWAYS_ON = TraceIdRatioBased(1.0)
ALWAYS_OFF = TraceIdRatioBased(0.0)


class ParentBased:
    """Follows the parent's sampled flag; asks ``root`` only for new traces."""

    def __init__(self, root: Sampler) -> None:
        self.root = root
        self.root_bound: int | None = getattr(root, "root_bound", None)

    def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
        """The parent's decision when there is one, else the root sampler's."""
        if parent is not None and parent.is_valid:
            return parent.sampled
        return self.root.should_sample(trace_id, parent, name)

    def __repr__(self) -> str:
        return f"ParentBased({self.root!r})"


def sampler_from_name(name: str, arg: float | None) -> Sampler:
    """Build one of OTEL_TRACES_SAMPLER's samplers from its name and ratio."""
    rate = 1.0 if arg is None else arg
    key = name.strip().lower()
    if key == "always_on":
        return TraceIdRatioBased(1.0)
    if key == "always_off":
        return TraceIdRatioBased(0.0)
    if key == "traceidratio":
        return TraceIdRatioBased(rate)
    if key == "parentbased_always_on":
        return ParentBased(TraceIdRatioBased(1.0))
    if key == "parentbased_always_off":
        return ParentBased(TraceIdRatioBased(0.0))
    if key == "parentbased_traceidratio":
        return ParentBased(TraceIdRatioBased(rate))
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")
