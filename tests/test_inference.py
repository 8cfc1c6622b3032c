"""InferenceSpanBuilder: GenAI semantic-convention attributes, built and recorded."""

from __future__ import annotations

import autotrace
from autotrace import InferenceSpanBuilder, StatusCode
from tests.conftest import all_spans


def test_builder_sets_genai_attributes_and_records() -> None:
    """The seed's builder chain stores one span with GenAI convention names."""
    stored = (
        InferenceSpanBuilder("inference")
        .with_request_id(123)
        .with_prompt_length(50)
        .with_max_tokens(100)
        .with_model("tiny-llm")
        .build_and_record()
    )
    assert stored is True
    (s,) = all_spans()
    assert s.name == "inference"
    assert s.attributes["gen_ai.request.model"] == "tiny-llm"
    assert s.attributes["gen_ai.request.max_tokens"] == 100
    assert s.attributes["gen_ai.usage.input_tokens"] == 50
    assert s.attributes["autotrace.request.id"] == 123
    assert s.attributes["gen_ai.operation.name"] == "text_completion"
    assert s.end_time_unix_nano is not None


def test_builder_build_without_recording_and_error() -> None:
    """build() gives a span without storing it; with_error marks it ERROR."""
    s = InferenceSpanBuilder().with_model("m").with_times(1_000, 3_000).with_error(RuntimeError("oom")).build()
    assert autotrace.trace_count() == 0
    assert s.duration_ns == 2_000
    assert s.status.code is StatusCode.ERROR and s.events[0].name == "exception"


def test_builder_unsampled() -> None:
    """build_and_record returns False when the trace is not sampled."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    assert InferenceSpanBuilder().build_and_record() is False


def test_builder_inside_a_span_records_a_child_in_the_same_trace() -> None:
    """Built inside a request's span, the inference span joins that trace as its child."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0))
    with autotrace.span("request") as req:
        assert InferenceSpanBuilder("inference").with_model("m").build_and_record() is True
    assert autotrace.trace_count() == 1
    inference = next(s for s in all_spans() if s.name == "inference")
    assert inference.trace_id == req.trace_id and inference.parent_span_id == req.span_id


def test_builder_follows_its_parents_sampling_decision() -> None:
    """Under a sampled remote parent it is kept even at rate 0; under an unsampled trace it is not."""
    from autotrace.propagation import extract

    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    remote = extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    with autotrace.use_span(remote):
        assert InferenceSpanBuilder("kept").build_and_record() is True
    with autotrace.span("unsampled-root"):
        assert InferenceSpanBuilder("dropped").build_and_record() is False
    (s,) = all_spans()
    assert s.name == "kept" and s.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert s.parent_span_id == "b7ad6b7169203331"


def test_every_builder_attribute_is_a_current_genai_name() -> None:
    """The builder writes only current GenAI semantic-convention names (gen_ai.provider.name, not gen_ai.system)."""
    current = {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.request.max_tokens",
        "gen_ai.request.temperature",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    }
    span = (
        InferenceSpanBuilder("chat tiny-llm")
        .with_request_id(1)
        .with_prompt_length(50)
        .with_output_tokens(7)
        .with_max_tokens(100)
        .with_model("tiny-llm")
        .with_provider("autotrace.demo")
        .with_temperature(0.2)
        .with_operation("chat")
        .build()
    )
    genai = {k for k in span.attributes if k.startswith("gen_ai.")}
    assert genai == current
    openinference = {k for k in span.attributes if k.startswith(("llm.", "openinference."))}
    assert set(span.attributes) - genai - openinference == {"autotrace.request.id"}
    assert span.attributes["gen_ai.provider.name"] == "autotrace.demo"
