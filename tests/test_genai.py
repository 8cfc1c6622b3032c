"""autotrace.llm: GenAI and OpenInference LLM spans, stream latencies, prompt capture; the builder's engine keys."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import autotrace
from autotrace import InferenceSpanBuilder, SpanKind, StatusCode
from autotrace import genai as genai_module
from autotrace.genai import LLMSpan
from tests.conftest import all_spans
from tests.otlp_check import attrs_of, spans_of, validate

# Every key an LLM span carries, with its OTLP AnyValue kind.
GENAI_KEYS = {
    "gen_ai.operation.name": "stringValue",
    "gen_ai.provider.name": "stringValue",
    "gen_ai.request.model": "stringValue",
    "gen_ai.request.max_tokens": "intValue",
    "gen_ai.request.temperature": "doubleValue",
    "gen_ai.response.model": "stringValue",
    "gen_ai.response.finish_reasons": "arrayValue",
    "gen_ai.usage.input_tokens": "intValue",
    "gen_ai.usage.output_tokens": "intValue",
    "gen_ai.latency.e2e": "doubleValue",
}
OPENINFERENCE_KEYS = {
    "openinference.span.kind": "stringValue",
    "llm.model_name": "stringValue",
    "llm.provider": "stringValue",
    "llm.token_count.prompt": "intValue",
    "llm.token_count.completion": "intValue",
    "llm.token_count.total": "intValue",
    "llm.invocation_parameters": "stringValue",
}
STREAM_KEYS = {
    "gen_ai.latency.time_to_first_token": "doubleValue",
    "gen_ai.response.time_to_first_chunk": "doubleValue",
    "gen_ai.latency.time_in_model_decode": "doubleValue",
    "gen_ai.latency.time_per_output_token": "doubleValue",
}


def exported_span(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The named span of the schema-validated OTLP export, with its decoded attributes and their kinds."""
    doc = autotrace.export_traces()
    validate(doc)
    (span,) = [s for s in spans_of(doc) if s["name"] == name]
    kinds = {kv["key"]: next(iter(kv["value"])) for kv in span["attributes"]}
    return {**span, "attrs": attrs_of(span)}, kinds


def assert_conventions_agree(attrs: dict[str, Any]) -> None:
    """The OpenInference numbers are the GenAI ones."""
    assert attrs["llm.token_count.prompt"] == attrs["gen_ai.usage.input_tokens"]
    assert attrs["llm.token_count.completion"] == attrs["gen_ai.usage.output_tokens"]
    assert attrs["llm.token_count.total"] == attrs["gen_ai.usage.input_tokens"] + attrs["gen_ai.usage.output_tokens"]
    assert attrs["llm.model_name"] == attrs.get("gen_ai.response.model", attrs["gen_ai.request.model"])
    assert attrs["llm.provider"] == attrs["gen_ai.provider.name"]
    params = json.loads(attrs["llm.invocation_parameters"])
    assert params["max_tokens"] == attrs["gen_ai.request.max_tokens"]
    assert params["temperature"] == attrs["gen_ai.request.temperature"]


def test_context_manager_span_carries_both_conventions_in_valid_otlp() -> None:
    """`with llm(...)` exports a valid CLIENT span "{operation} {model}" with every GenAI and OpenInference key."""
    with autotrace.llm("chat", model="tiny-llm", provider="local") as s:
        s.set_request(max_tokens=64, temperature=0.25)
        s.set_usage(input_tokens=12, output_tokens=30)
        s.set_response(model="tiny-llm-0613", finish_reasons=["stop"])
    span, kinds = exported_span("chat tiny-llm")
    assert span["kind"] == 3  # SPAN_KIND_CLIENT
    for key, kind in {**GENAI_KEYS, **OPENINFERENCE_KEYS}.items():
        assert kinds.get(key) == kind, (key, kinds.get(key))
    attrs = span["attrs"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["llm.token_count.total"] == 42
    assert_conventions_agree(attrs)


def test_decorated_function_reads_request_parameters_and_client_response() -> None:
    """A decorated call's max_tokens/temperature (defaults included) and an OpenAI-shaped response fill the span."""

    @autotrace.llm("chat", provider="openai")
    def complete(
        messages: list[dict[str, str]], model: str = "gpt-x", max_tokens: int = 128, temperature: float = 1.0
    ) -> dict[str, Any]:
        return {
            "id": "resp-1",
            "model": "gpt-x-2025",
            "usage": {"prompt_tokens": 9, "completion_tokens": 3},
            "choices": [{"finish_reason": "length", "message": {"content": "hi"}}],
        }

    result = complete([{"role": "user", "content": "hello"}], temperature=0.5)
    assert result["id"] == "resp-1"
    span, kinds = exported_span("chat gpt-x")
    attrs = span["attrs"]
    assert attrs["gen_ai.request.model"] == "gpt-x"
    assert attrs["gen_ai.request.max_tokens"] == 128
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.id"] == "resp-1"
    assert attrs["gen_ai.response.finish_reasons"] == ["length"]
    for key, kind in {**GENAI_KEYS, **OPENINFERENCE_KEYS}.items():
        assert kinds.get(key) == kind, (key, kinds.get(key))
    assert_conventions_agree(attrs)
    assert "input.value" not in attrs and "output.value" not in attrs  # capture is off by default


def test_token_stream_records_ttft_and_time_per_token_from_the_stream() -> None:
    """A stream waiting 0.2 s for its first token and 0.05 s between tokens gives TTFT >= 0.2 s, TPOT >= 0.05 s."""

    @autotrace.llm("text_completion", model="tiny-llm", provider="local")
    def stream(prompt: str, max_tokens: int = 5, temperature: float = 0.0) -> Iterator[str]:
        time.sleep(0.2)
        for i in range(5):
            if i:
                time.sleep(0.05)
            yield f"t{i}"

    started = time.perf_counter()
    assert list(stream("hi")) == ["t0", "t1", "t2", "t3", "t4"]
    elapsed = time.perf_counter() - started
    span, kinds = exported_span("text_completion tiny-llm")
    attrs = span["attrs"]
    for key, kind in STREAM_KEYS.items():
        assert kinds.get(key) == kind, (key, kinds.get(key))
    ttft = attrs["gen_ai.latency.time_to_first_token"]
    tpot = attrs["gen_ai.latency.time_per_output_token"]
    # Lower bounds from the sleeps; upper bounds only from the wall time measured around the call.
    assert 0.2 <= ttft <= elapsed
    assert attrs["gen_ai.response.time_to_first_chunk"] == ttft
    assert 0.05 <= tpot <= elapsed / 4
    assert 0.2 <= attrs["gen_ai.latency.time_in_model_decode"] <= elapsed
    assert ttft + attrs["gen_ai.latency.time_in_model_decode"] <= attrs["gen_ai.latency.e2e"] <= elapsed
    assert attrs["gen_ai.usage.output_tokens"] == 5 == attrs["llm.token_count.completion"]


def test_async_stream_counts_chunks_with_a_user_counter() -> None:
    """An async generator of text chunks is timed, and count_tokens decides how many tokens each chunk holds."""

    @autotrace.llm("chat", model="m", count_tokens=lambda chunk: len(chunk.split()))
    async def stream(prompt: str) -> AsyncIterator[str]:
        await asyncio.sleep(0.05)
        yield "one two"
        await asyncio.sleep(0.02)
        yield "three four five"

    async def consume() -> list[str]:
        return [chunk async for chunk in stream("p")]

    assert asyncio.run(consume()) == ["one two", "three four five"]
    (s,) = all_spans()
    assert s.attributes["gen_ai.usage.output_tokens"] == 5
    assert s.attributes["gen_ai.latency.time_to_first_token"] >= 0.045  # asyncio may wake a clock tick early
    assert s.attributes["gen_ai.latency.time_per_output_token"] >= 0.015 / 3


def test_decorator_keeps_function_kind_signature_and_results() -> None:
    """@llm keeps sync, async, generator and async-generator kinds, the signature, methods and return values."""

    class Model:
        @autotrace.llm("chat", model="m")
        def call(self, prompt: str, max_tokens: int = 4) -> str:
            return prompt.upper()

        @autotrace.llm
        async def acall(self, prompt: str) -> str:
            return prompt

    @autotrace.llm("chat")
    def gen(prompt: str) -> Iterator[int]:
        yield 1

    assert Model().call("hi") == "HI"
    assert asyncio.run(Model().acall("x")) == "x"
    assert inspect.iscoroutinefunction(Model.acall)
    assert inspect.isgeneratorfunction(gen)
    assert list(inspect.signature(Model.call).parameters) == ["self", "prompt", "max_tokens"]
    assert Model.call.__name__ == "call"
    names = {s.name for s in all_spans()}
    assert names == {"chat m", "text_completion"}
    assert {s.kind for s in all_spans()} == {SpanKind.CLIENT}


def test_errors_propagate_unchanged_and_mark_the_span() -> None:
    """An exception from the model call passes through as the same object; the span is ERROR with error.type."""
    boom = KeyError("gone")

    @autotrace.llm("chat", model="m")
    def fails(prompt: str) -> Iterator[str]:
        yield "a"
        raise boom

    with pytest.raises(KeyError) as info:
        list(fails("p"))
    assert info.value is boom
    (s,) = all_spans()
    assert s.status.code == StatusCode.ERROR
    assert s.attributes["error.type"] == "KeyError"
    assert s.attributes["gen_ai.usage.output_tokens"] == 1


def test_closed_stream_still_records_what_it_saw() -> None:
    """A consumer that stops early closes the user's generator and the span keeps the tokens seen."""
    closed = []

    @autotrace.llm("chat", model="m")
    def stream(prompt: str) -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.append(True)

    gen = stream("p")
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert closed == [True]
    (s,) = all_spans()
    assert s.attributes["gen_ai.usage.output_tokens"] == 2


def test_capture_io_records_redacted_prompt_and_completion() -> None:
    """capture_io keeps prompt and streamed completion, redacted, as input/output.value and GenAI messages."""

    @autotrace.llm("chat", model="m", capture_io=True)
    def chat(messages: list[dict[str, str]]) -> Iterator[str]:
        yield "the key is "
        yield "sk-abcdefghijklmnopqrstuvwx"

    list(chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "password=hunter2 hi"}]))
    (s,) = all_spans()
    attrs = s.attributes
    inputs = json.loads(attrs["gen_ai.input.messages"])
    assert inputs == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "password=[REDACTED] hi"}]},
    ]
    assert attrs["llm.input_messages.1.message.content"] == "password=[REDACTED] hi"
    assert attrs["input.mime_type"] == "application/json"
    assert "hunter2" not in attrs["input.value"]
    assert attrs["output.value"] == "the key is [REDACTED]"
    outputs = json.loads(attrs["gen_ai.output.messages"])
    assert outputs == [{"role": "assistant", "parts": [{"type": "text", "content": "the key is [REDACTED]"}]}]


def test_capture_io_text_is_cut_to_the_capture_limits() -> None:
    """A huge prompt and completion are cut to capture_max_length and together stay within capture_max_bytes."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, capture_max_length=200, capture_max_bytes=2000))

    @autotrace.llm("text_completion", model="m", capture_io=True)
    def complete(prompt: str) -> str:
        return "y" * 1_000_000

    complete("x" * 1_000_000)
    (s,) = all_spans()
    assert s.attributes["input.value"] == "x" * 200 + "…"
    assert s.attributes["output.value"] == "y" * 200 + "…"
    from autotrace.redaction import captured_bytes

    assert captured_bytes(s.attributes) <= 2000


def test_unsampled_call_records_nothing_and_returns() -> None:
    """An unsampled llm call runs the function as is and stores nothing."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @autotrace.llm("chat", model="m")
    def stream(prompt: str) -> Iterator[str]:
        yield from "abc"

    assert list(stream("p")) == ["a", "b", "c"]
    with autotrace.llm("chat", model="m") as s:
        s.set_usage(input_tokens=1, output_tokens=2)
    assert all_spans() == []


def test_observers_see_the_complete_span() -> None:
    """The metrics hook: observers get the complete llm span before it ends; one that raises is skipped."""
    seen: list[dict[str, Any]] = []

    def broken(span: autotrace.Span) -> None:
        raise RuntimeError("observer bug")

    genai_module.observers.extend([broken, lambda span: seen.append(dict(span.attributes))])
    try:
        with autotrace.llm("chat", model="m") as s:
            s.set_usage(input_tokens=2, output_tokens=3)
    finally:
        del genai_module.observers[:]
    assert seen[0]["llm.token_count.total"] == 5
    assert seen[0]["gen_ai.latency.e2e"] >= 0


def test_llm_span_of_the_current_span_inside_a_decorated_function() -> None:
    """Inside @llm, LLMSpan(current_span()) sets usage, and the OpenInference totals follow at the end."""

    @autotrace.llm("chat", model="m")
    def call(prompt: str) -> str:
        LLMSpan(autotrace.current_span()).set_usage(input_tokens=4, output_tokens=6)
        return "ok"

    call("p")
    (s,) = all_spans()
    assert s.attributes["llm.token_count.total"] == 10


def test_bad_arguments_are_clear_errors() -> None:
    """A wrong operation, model or counter type is a TypeError naming it, at decoration time."""
    with pytest.raises(TypeError, match="operation"):
        autotrace.llm("")
    with pytest.raises(TypeError, match="model"):
        autotrace.llm("chat", model=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="count_tokens"):
        autotrace.llm("chat", count_tokens=5)  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        autotrace.llm("chat", kind="sideways")


def test_builder_engine_keys_and_openinference_names() -> None:
    """The builder writes the engines' gen_ai.latency.* seconds and OpenInference names agreeing with GenAI."""
    ok = (
        InferenceSpanBuilder("chat tiny-llm", kind="server")
        .with_operation("chat")
        .with_model("tiny-llm")
        .with_provider("local")
        .with_max_tokens(64)
        .with_temperature(0.5)
        .with_prompt_length(10)
        .with_output_tokens(20)
        .with_response_model("tiny-llm-1")
        .with_finish_reason("stop")
        .with_queue_time(0.01)
        .with_ttft(0.12)
        .with_prefill_time(0.1)
        .with_decode_time(0.4)
        .with_inference_time(0.5)
        .with_e2e_time(0.52)
        .with_time_per_output_token(0.02)
        .build_and_record()
    )
    assert ok
    span, kinds = exported_span("chat tiny-llm")
    attrs = span["attrs"]
    for key in (
        "gen_ai.latency.time_in_queue",
        "gen_ai.latency.time_to_first_token",
        "gen_ai.latency.time_in_model_prefill",
        "gen_ai.latency.time_in_model_decode",
        "gen_ai.latency.time_in_model_inference",
        "gen_ai.latency.e2e",
        "gen_ai.latency.time_per_output_token",
        "gen_ai.response.time_to_first_chunk",
    ):
        assert kinds[key] == "doubleValue", key
    assert attrs["gen_ai.latency.time_to_first_token"] == 0.12 == attrs["gen_ai.response.time_to_first_chunk"]
    for key, kind in {**GENAI_KEYS, **OPENINFERENCE_KEYS}.items():
        if key != "gen_ai.latency.e2e":
            assert kinds.get(key) == kind, (key, kinds.get(key))
    assert_conventions_agree(attrs)
    with pytest.raises(ValueError, match="with_ttft"):
        InferenceSpanBuilder().with_ttft(-1)
    with pytest.raises(ValueError, match="with_queue_time"):
        InferenceSpanBuilder().with_queue_time("soon")  # type: ignore[arg-type]


def test_long_chat_stays_within_the_capture_budget() -> None:
    """100 chat messages of 10 kB keep the latest turns within capture_max_bytes and count the ones left out."""
    from autotrace.redaction import DROPPED_KEY, captured_bytes

    @autotrace.llm("chat", model="m", capture_io=True)
    def chat(messages: list[dict[str, str]]) -> str:
        return "z" * 100_000

    history = [{"role": "user" if i % 2 else "assistant", "content": f"{i}:" + "x" * 10_000} for i in range(100)]
    chat(history)
    (s,) = all_spans()
    attrs = s.attributes
    assert captured_bytes(attrs) <= 4096
    kept = json.loads(attrs["gen_ai.input.messages"])
    assert 0 < len(kept) < 100 and attrs[DROPPED_KEY] == 100 - len(kept)
    assert kept[-1]["parts"][0]["content"].startswith("99:")  # the latest turn
    assert attrs["output.value"].startswith("zzz") and attrs["output.value"].endswith("…")
    validate(autotrace.export_traces())


def test_openai_shaped_stream_chunks_give_usage_reasons_and_text() -> None:
    """OpenAI-shaped stream chunks (delta content, finish_reason, a final usage) fill the span; usage wins the count."""
    from types import SimpleNamespace as NS

    def chunk(content: str | None, reason: str | None = None, usage: Any = None) -> Any:
        return NS(model="gpt-x-2025", choices=[NS(delta=NS(content=content), finish_reason=reason)], usage=usage)

    @autotrace.llm("chat", model="gpt-x", provider="openai", capture_io=True)
    def stream(prompt: str) -> Iterator[Any]:
        yield chunk("Hel")
        yield chunk("lo")
        yield chunk(None, "stop")
        yield NS(model="gpt-x-2025", choices=[], usage=NS(prompt_tokens=7, completion_tokens=2))

    assert len(list(stream("hi"))) == 4
    span, _ = exported_span("chat gpt-x")
    attrs = span["attrs"]
    assert attrs["gen_ai.usage.output_tokens"] == 2 and attrs["gen_ai.usage.input_tokens"] == 7
    assert attrs["gen_ai.response.model"] == "gpt-x-2025"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["output.value"] == "Hello"
    assert json.loads(attrs["gen_ai.output.messages"])[0]["finish_reason"] == "stop"
    assert attrs["llm.token_count.total"] == 9


def test_classmethod_and_staticmethod() -> None:
    """@llm over @classmethod and @staticmethod binds as they do."""

    class Client:
        prefix = "c:"

        @autotrace.llm("chat", model="m")
        @classmethod
        def make(cls, prompt: str) -> str:
            return cls.prefix + prompt

        @autotrace.llm("embeddings", model="e")
        @staticmethod
        def embed(text: str) -> list[float]:
            return [float(len(text))]

    assert Client.make("x") == "c:x" and Client().make("y") == "c:y"
    assert Client.embed("abc") == [3.0]
    kinds = {s.name: s.attributes["openinference.span.kind"] for s in all_spans()}
    assert kinds == {"chat m": "LLM", "embeddings e": "EMBEDDING"}


def test_one_llm_object_used_for_nested_blocks() -> None:
    """A shared llm(...) object used in nested `with` blocks ends each span with its own figures."""
    call = autotrace.llm("chat", model="m")
    with call as outer:
        outer.set_usage(input_tokens=1, output_tokens=1)
        with call as inner:
            inner.set_usage(input_tokens=5, output_tokens=5)
    by_total = {s.attributes["llm.token_count.total"]: s for s in all_spans()}
    assert set(by_total) == {2, 10}
    assert by_total[10].parent_span_id == by_total[2].span_id


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_signal_while_the_response_is_read_goes_on_and_the_span_ends(kind: str) -> None:
    """A KeyboardInterrupt arriving while @llm reads the response reaches the caller, and the span's end still runs."""
    import sys

    code = LLMSpan._result.__code__

    def interrupt(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is code and event == "call":
            raise KeyboardInterrupt  # as a signal handler's exception, on entering the response reader
        return None

    @autotrace.llm("chat", model="m")
    def answer(prompt: str) -> str:
        return "fine"

    @autotrace.llm("chat", model="m")
    async def answer_async(prompt: str) -> str:
        return "fine"

    sys.settrace(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            if kind == "sync":
                answer("p")
            else:
                asyncio.run(answer_async("p"))
    finally:
        sys.settrace(None)
    (s,) = all_spans()
    assert s.end_time_unix_nano is not None
    assert genai_module.LATENCY_E2E in s.attributes  # what the end writes: the end ran
