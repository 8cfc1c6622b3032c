"""InferenceSpanBuilder: an inference span with GenAI, engine-latency and OpenInference names."""

from __future__ import annotations

import math
from typing import Any

from . import genai
from .context import current_span_context
from .spans import Span, SpanKind

__all__ = ["InferenceSpanBuilder"]


class InferenceSpanBuilder:
    """Builds a span describing one model call, then records it.

    ``InferenceSpanBuilder("inference").with_request_id(123).with_prompt_length(50)
    .with_max_tokens(100).with_model("tiny-llm").build_and_record()``

    Attribute names follow the OpenTelemetry GenAI conventions where one exists
    (``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
    ``gen_ai.usage.input_tokens``...), latencies use the keys vLLM, SGLang and
    TensorRT-LLM emit (``gen_ai.latency.time_in_queue``, ``…time_to_first_token``,
    ``…time_in_model_prefill``, ``…_decode``, ``…e2e``, in seconds), and the span
    also carries the OpenInference names derived from them (``openinference.span.kind``,
    ``llm.model_name``, ``llm.token_count.*``) so Phoenix shows it as an LLM span.
    The rest live under ``autotrace.``.
    """

    def __init__(self, name: str = "inference", *, kind: SpanKind | str = SpanKind.INTERNAL) -> None:
        self._name = name
        self._kind = kind
        self._attrs: dict[str, Any] = {}
        self._start: int | None = None
        self._end: int | None = None
        self._error: BaseException | None = None

    def _set(self, key: str, value: Any) -> InferenceSpanBuilder:
        self._attrs[key] = value
        return self

    def with_request_id(self, request_id: int | str) -> InferenceSpanBuilder:
        """The caller's request id (``autotrace.request.id``)."""
        return self._set("autotrace.request.id", request_id)

    def with_prompt_length(self, tokens: int) -> InferenceSpanBuilder:
        """Prompt length in tokens (``gen_ai.usage.input_tokens``)."""
        return self._set("gen_ai.usage.input_tokens", tokens)

    def with_output_tokens(self, tokens: int) -> InferenceSpanBuilder:
        """Generated tokens (``gen_ai.usage.output_tokens``)."""
        return self._set("gen_ai.usage.output_tokens", tokens)

    def with_max_tokens(self, tokens: int) -> InferenceSpanBuilder:
        """The request's token budget (``gen_ai.request.max_tokens``)."""
        return self._set("gen_ai.request.max_tokens", tokens)

    def with_model(self, model: str) -> InferenceSpanBuilder:
        """The requested model (``gen_ai.request.model``)."""
        return self._set("gen_ai.request.model", model)

    def with_provider(self, provider: str) -> InferenceSpanBuilder:
        """Who serves the model (``gen_ai.provider.name``: openai, aws.bedrock, or your own name)."""
        return self._set("gen_ai.provider.name", provider)

    def with_temperature(self, temperature: float) -> InferenceSpanBuilder:
        """Sampling temperature (``gen_ai.request.temperature``)."""
        return self._set("gen_ai.request.temperature", float(temperature))

    def with_operation(self, operation: str) -> InferenceSpanBuilder:
        """``gen_ai.operation.name``: chat, text_completion, embeddings..."""
        return self._set("gen_ai.operation.name", operation)

    def with_response_model(self, model: str) -> InferenceSpanBuilder:
        """The model that answered (``gen_ai.response.model``)."""
        return self._set("gen_ai.response.model", model)

    def with_finish_reason(self, *reasons: str) -> InferenceSpanBuilder:
        """Why generation stopped, one per choice (``gen_ai.response.finish_reasons``: stop, length...)."""
        if not reasons or not all(isinstance(r, str) for r in reasons):
            raise ValueError(f"with_finish_reason takes one or more str; got {reasons!r}")
        return self._set("gen_ai.response.finish_reasons", list(reasons))

    def with_queue_time(self, seconds: float) -> InferenceSpanBuilder:
        """Time the request waited before it was scheduled (``gen_ai.latency.time_in_queue``)."""
        return self._seconds("with_queue_time", seconds, genai.LATENCY_QUEUE)

    def with_ttft(self, seconds: float) -> InferenceSpanBuilder:
        """Time to first token (``gen_ai.latency.time_to_first_token`` and ``gen_ai.response.time_to_first_chunk``)."""
        self._seconds("with_ttft", seconds, genai.LATENCY_TTFT)
        return self._set(genai.TIME_TO_FIRST_CHUNK, float(seconds))

    def with_prefill_time(self, seconds: float) -> InferenceSpanBuilder:
        """Time in the model's prefill (``gen_ai.latency.time_in_model_prefill``)."""
        return self._seconds("with_prefill_time", seconds, genai.LATENCY_PREFILL)

    def with_decode_time(self, seconds: float) -> InferenceSpanBuilder:
        """Time in the model's decode, first token to last (``gen_ai.latency.time_in_model_decode``)."""
        return self._seconds("with_decode_time", seconds, genai.LATENCY_DECODE)

    def with_inference_time(self, seconds: float) -> InferenceSpanBuilder:
        """Time in the model, prefill and decode (``gen_ai.latency.time_in_model_inference``)."""
        return self._seconds("with_inference_time", seconds, genai.LATENCY_INFERENCE)

    def with_e2e_time(self, seconds: float) -> InferenceSpanBuilder:
        """Arrival to last token (``gen_ai.latency.e2e``)."""
        return self._seconds("with_e2e_time", seconds, genai.LATENCY_E2E)

    def with_time_per_output_token(self, seconds: float) -> InferenceSpanBuilder:
        """Mean time per token after the first (``gen_ai.latency.time_per_output_token``)."""
        return self._seconds("with_time_per_output_token", seconds, genai.LATENCY_TPOT)

    def _seconds(self, method: str, seconds: float, key: str) -> InferenceSpanBuilder:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f"{method} takes seconds as a number; got {seconds!r}")
        value = float(seconds)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{method} takes a finite, non-negative number of seconds; got {seconds!r}")
        return self._set(key, value)

    def with_attribute(self, key: str, value: Any) -> InferenceSpanBuilder:
        """Any other attribute."""
        return self._set(key, value)

    def with_times(self, start_time_unix_nano: int, end_time_unix_nano: int) -> InferenceSpanBuilder:
        """Explicit start and end times (unix nanoseconds)."""
        self._start, self._end = start_time_unix_nano, end_time_unix_nano
        return self

    def with_error(self, exc: BaseException) -> InferenceSpanBuilder:
        """Mark the call failed with this exception."""
        self._error = exc
        return self

    def build(self) -> Span:
        """The span, not yet recorded (``record_span`` stores it); a child of the current span if any."""
        attrs = dict(self._attrs)
        attrs.setdefault("gen_ai.operation.name", "text_completion")
        for key, value in genai.openinference_attributes(attrs).items():
            attrs.setdefault(key, value)  # one mapping from the GenAI names: the two always agree
        # Built inside a span (a request handler), it is that span's child, in its trace.
        parent = current_span_context()
        span = Span(
            self._name,
            attributes=attrs,
            kind=self._kind,
            start_time_unix_nano=self._start,
            trace_id=parent.trace_id if parent is not None and parent.is_valid else None,
            parent_span_id=parent.span_id if parent is not None and parent.is_valid else None,
        )
        if self._error is not None:
            span._fail(self._error, escaped=False)
        if self._end is not None:
            span.end(self._end)  # a hand-built span is only stored by record_span()
        return span

    def build_and_record(self) -> bool:
        """Build the span and store it; True when its trace was sampled and it was stored."""
        from .tracer import record_span

        return record_span(self.build())
