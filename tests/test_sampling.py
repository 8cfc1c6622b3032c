"""Head sampling: OpenTelemetry's TraceIdRatioBased rule, per trace, parent-based."""

from __future__ import annotations

import logging
import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased as OtelRatio

import autotrace
from autotrace import SpanContext, span, traced
from autotrace.sampling import ParentBased, TraceIdRatioBased, ratio_bound, sampler_from_name
from tests.conftest import all_spans


@pytest.mark.parametrize("rate", [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_same_decision_as_opentelemetry(rate: float) -> None:
    """For 20,000 trace ids (random and edge cases) the decision equals opentelemetry-sdk's."""
    ours = TraceIdRatioBased(rate)
    theirs = OtelRatio(rate)
    rng = random.Random(rate)
    bound = ratio_bound(rate)
    ids = [rng.getrandbits(128) for _ in range(20_000)]
    ids += [1, (1 << 128) - 1, (1 << 64) - 1, 1 << 64, max(bound - 1, 1), bound, bound + 1]
    for tid in ids:
        expected = theirs.should_sample(None, tid, "x").decision == Decision.RECORD_AND_SAMPLE
        assert ours.should_sample(tid, None, "x") is expected, hex(tid)
    assert ours.root_bound == theirs.bound


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_sampled_share_within_statistical_bounds(rate: float) -> None:
    """Of 20,000 root traces the sampled share is within 5 standard deviations of the rate."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=rate, max_traces=50_000))

    @traced
    def root() -> None:
        pass

    n = 20_000
    for _ in range(n):
        root()
    got = autotrace.trace_count()
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(got - n * rate) <= 5 * sd + 1


def test_whole_traces_are_sampled_or_not() -> None:
    """Children follow their root: every stored trace is complete, none is partial."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.5, max_traces=10_000))

    @traced
    def child() -> None:
        with span("grandchild"):
            pass

    @traced
    def root() -> None:
        child()
        child()

    for _ in range(1_000):
        root()
    traces = autotrace.get_trace_store().traces()
    assert 350 < len(traces) < 650
    for spans in traces:
        assert sorted(s.name for s in spans) == sorted(
            ["grandchild", "grandchild", child.__qualname__, child.__qualname__, root.__qualname__]
        )


def test_decision_is_on_trace_id_low_bits() -> None:
    """Stored traces all have low 64 bits below the bound; unsampled ones are not stored."""
    rate = 0.3
    autotrace.configure(autotrace.TraceConfig(sample_rate=rate, max_traces=10_000))
    for _ in range(2_000):
        with span("r"):
            pass
    bound = ratio_bound(rate)
    for s in all_spans():
        assert int(s.trace_id, 16) & ((1 << 64) - 1) < bound


def test_remote_parent_flag_is_honoured() -> None:
    """Below a remote parent the parent's sampled flag decides, whatever the rate."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    with span("s", parent=SpanContext(0xAB, 0xCD, True, True)) as s:
        assert s.is_recording
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    with span("s", parent=SpanContext(0xAB, 0xCD, False, True)) as s:
        assert not s.is_recording


def test_non_parent_based_sampler_ignores_remote_flag() -> None:
    """OTEL_TRACES_SAMPLER=traceidratio decides from the trace id even under a remote parent."""
    sampler = sampler_from_name("traceidratio", 1.0)
    autotrace.configure(autotrace.TraceConfig(sampler=sampler))
    with span("s", parent=SpanContext(0xAB, 0xCD, False, True)) as s:
        assert s.is_recording


def test_named_samplers() -> None:
    """Every OTEL_TRACES_SAMPLER name builds the matching sampler; unknown names raise."""
    tid = (1 << 64) - 1  # low bits at the maximum: only rate 1.0 samples it
    assert sampler_from_name("always_on", None).should_sample(tid, None, "x")
    assert not sampler_from_name("always_off", None).should_sample(1, None, "x")
    assert not sampler_from_name("traceidratio", 0.5).should_sample(tid, None, "x")
    pb = sampler_from_name("parentbased_always_off", None)
    assert isinstance(pb, ParentBased)
    assert pb.should_sample(1, SpanContext(1, 2, True, True), "x")
    assert not pb.should_sample(1, None, "x")
    assert sampler_from_name("parentbased_traceidratio", 1.0).should_sample(tid, None, "x")
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_from_name("sometimes", None)
    with pytest.raises(ValueError, match="between 0 and 1"):
        TraceIdRatioBased(1.5)


def test_custom_sampler_protocol() -> None:
    """A custom sampler object decides for new traces, by name here."""

    class ByName:
        def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
            return name.startswith("keep")

    autotrace.configure(autotrace.TraceConfig(sampler=ByName()))

    @traced("keep-me")
    def a() -> None:
        with span("child"):
            pass

    @traced("drop-me")
    def b() -> None:
        with span("child"):
            pass

    a()
    b()
    assert sorted(s.name for s in all_spans()) == ["child", "keep-me"]


def test_failing_custom_sampler_drops_but_never_raises() -> None:
    """A sampler that raises means 'not sampled'; the traced function still runs."""

    class Broken:
        def should_sample(self, trace_id: int, parent: SpanContext | None, name: str) -> bool:
            raise RuntimeError("sampler bug")

    autotrace.configure(autotrace.TraceConfig(sampler=Broken()))

    @traced
    def f() -> int:
        return 7

    assert f() == 7
    assert autotrace.trace_count() == 0
    assert any("sampler" in k for k in autotrace.tracer.errors())


def _rate_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autotrace" and "of new traces" in r.getMessage()]


def test_the_first_root_span_logs_the_sample_rate_once(caplog: pytest.LogCaptureFixture) -> None:
    """Five traced calls at the default-like rate: one DEBUG line says the rate and what happened to the first root."""
    caplog.set_level(logging.DEBUG, logger="autotrace")

    @traced
    def call() -> int:
        return 1

    autotrace.configure(sample_rate=0.1)
    assert [call() for _ in range(5)] == [1] * 5
    with span("later"):
        pass
    (line,) = _rate_lines(caplog)
    assert "recording 10% of new traces (sample rate 0.1)" in line and "AUTOTRACE_SAMPLE_RATE" in line
    assert f"the first root span {call.__qualname__!r} was " in line
    assert line.endswith(("was sampled", "was not sampled"))
    assert autotrace.tracer._S.custom is None  # the fast path is back after the first root
    caplog.clear()
    autotrace.configure(sampler=TraceIdRatioBased(0.0))  # a new rule is said again, at the next root only
    with span("first"):
        pass
    with span("second"):
        pass
    (line,) = _rate_lines(caplog)
    assert "recording 0% of new traces" in line and "'first' was not sampled" in line
