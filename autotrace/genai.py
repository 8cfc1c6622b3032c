"""LLM spans: ``autotrace.llm`` records a model call under the GenAI and OpenInference names.

    @autotrace.llm("chat", model="tiny-llm", provider="local")
    def generate(prompt, max_tokens=64, temperature=0.7):
        yield from tokens              # a token stream: TTFT and time per token recorded

    with autotrace.llm("chat", model="tiny-llm") as s:
        s.set_usage(input_tokens=12, output_tokens=30)
        s.set_response(model="tiny-llm-0613", finish_reasons=["stop"])

One span carries both conventions, so every backend shows it as a model call:
the OpenTelemetry GenAI names (``gen_ai.*``: Langfuse, Grafana, Datadog...), the
request-latency keys vLLM, SGLang and TensorRT-LLM emit (``gen_ai.latency.*``,
float seconds) and the OpenInference names Phoenix reads
(``openinference.span.kind``, ``llm.model_name``, ``llm.token_count.*``). Prompt
and completion text are kept only with ``capture_io=True``, redacted and cut as
``capture_args`` values are, within the span's capture budget.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import numbers
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from ._errors import internal_error
from ._stacktrace import class_name
from .context import CURRENT, current_span
from .spans import NonRecordingSpan, Span, SpanKind
from .tracer import span as _open_span

__all__ = ["LLMCall", "LLMSpan", "llm", "observers", "openinference_attributes"]

F = TypeVar("F", bound=Callable[..., Any])

_perf_counter = time.perf_counter
_cv_get = CURRENT.get

observers: list[Callable[[Span], None]] = []
"""Called as ``observer(span)`` when an llm span is complete, just before it ends.

The hook for metrics (the GenAI ``gen_ai.server.*`` histograms read the span's
``gen_ai.latency.*`` and ``gen_ai.usage.*`` values from here). An observer that
raises is logged once and skipped.
"""

# -- attribute names ------------------------------------------------------------------------

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # the GenAI conventions' span attribute
# The engines' request-latency keys (vLLM's SpanAttributes, also used by SGLang and TensorRT-LLM), in seconds.
LATENCY_QUEUE = "gen_ai.latency.time_in_queue"
LATENCY_TTFT = "gen_ai.latency.time_to_first_token"
LATENCY_E2E = "gen_ai.latency.e2e"
LATENCY_PREFILL = "gen_ai.latency.time_in_model_prefill"
LATENCY_DECODE = "gen_ai.latency.time_in_model_decode"
LATENCY_INFERENCE = "gen_ai.latency.time_in_model_inference"
# Not among vLLM's span keys (it is a histogram there, vllm:time_per_output_token_seconds, and
# gen_ai.server.time_per_output_token in the GenAI metrics): kept beside them under the same prefix.
LATENCY_TPOT = "gen_ai.latency.time_per_output_token"
ERROR_TYPE = "error.type"

OI_KIND = "openinference.span.kind"
_OI_KINDS = {"embeddings": "EMBEDDING", "execute_tool": "TOOL", "invoke_agent": "AGENT", "create_agent": "AGENT"}

# Request parameters read from a call's arguments when they are named as every client names them.
_FLOAT_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}
_INT_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_new_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}
_STOP_PARAMS = {"stop": "gen_ai.request.stop_sequences", "stop_sequences": "gen_ai.request.stop_sequences"}
# gen_ai.request.* -> the name in llm.invocation_parameters (OpenInference keeps the client's names).
_INVOCATION_NAMES = {
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.stop_sequences": "stop",
    "gen_ai.request.seed": "seed",
    "gen_ai.request.choice.count": "n",
}
# Where the prompt is, by argument name; otherwise the first argument.
_PROMPT_NAMES = ("messages", "prompt", "prompts", "input", "inputs", "text", "query", "question", "input_ids")
_MAX_MESSAGES = 32
_MAX_REASONS = 16


def openinference_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenInference attributes equivalent to a span's GenAI ones (one mapping, so both always agree)."""
    operation = attrs.get(OPERATION)
    out: dict[str, Any] = {OI_KIND: _OI_KINDS.get(operation, "LLM") if isinstance(operation, str) else "LLM"}
    model = attrs.get(RESPONSE_MODEL) or attrs.get(REQUEST_MODEL)
    if isinstance(model, str) and model:
        out["llm.model_name"] = model
    provider = attrs.get(PROVIDER)
    if isinstance(provider, str) and provider:
        out["llm.provider"] = provider
    prompt, completion = _count(attrs.get(INPUT_TOKENS)), _count(attrs.get(OUTPUT_TOKENS))
    if prompt is not None:
        out["llm.token_count.prompt"] = prompt
    if completion is not None:
        out["llm.token_count.completion"] = completion
    if prompt is not None and completion is not None:
        out["llm.token_count.total"] = prompt + completion
    params = {short: attrs[key] for key, short in _INVOCATION_NAMES.items() if key in attrs}
    if params:
        out["llm.invocation_parameters"] = json.dumps(params, sort_keys=True, default=list)
    return out


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a mapping or ``obj.name`` of an object (a client's response); None when absent."""
    try:
        if isinstance(obj, Mapping):
            return obj.get(name)
        return getattr(obj, name, None)
    except Exception:
        return None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- the span ------------------------------------------------------------------------------


class LLMSpan:
    """The span of one model call: GenAI and OpenInference setters on top of the span's own methods.

    ``with autotrace.llm(...) as s`` gives one; inside a function decorated with
    ``@autotrace.llm`` use ``LLMSpan(autotrace.current_span())``. Everything a
    span does (``set_attribute``, ``add_event``...) works on it too.
    """

    __slots__ = ("_capture", "_count", "_error", "_first", "_first_count", "_last", "_span", "_start", "_text")

    def __init__(self, span: Span | NonRecordingSpan, *, capture_io: bool = False) -> None:
        self._span = span
        self._capture = capture_io
        self._start = _perf_counter()
        self._first: float | None = None
        self._last = 0.0
        self._count = 0
        self._first_count = 0
        self._error: type[BaseException] | None = None  # what failed the call
        self._text: list[str] | None = [] if capture_io else None  # streamed text, bounded (see _item)

    @property
    def span(self) -> Span | NonRecordingSpan:
        """The underlying span."""
        return self._span

    def __getattr__(self, name: str) -> Any:
        return getattr(self._span, name)

    def __repr__(self) -> str:
        return f"LLMSpan({self._span!r})"

    # -- what users set ---------------------------------------------------------------------

    def set_usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Token counts of the call (``gen_ai.usage.*``; ``llm.token_count.*`` when the span ends)."""
        try:
            prompt, completion = _as_int(input_tokens), _as_int(output_tokens)
            if prompt is not None:
                self._span.set_attribute(INPUT_TOKENS, prompt)
            if completion is not None:
                self._span.set_attribute(OUTPUT_TOKENS, completion)
        except Exception as exc:
            internal_error("llm set_usage", exc)

    def set_response(self, model: str | None = None, finish_reasons: Any = None, id: str | None = None) -> None:
        """What the model answered with: its model name, why each choice stopped, the response id."""
        try:
            s = self._span
            if isinstance(model, str) and model:
                s.set_attribute(RESPONSE_MODEL, model)
            if isinstance(finish_reasons, str):
                finish_reasons = [finish_reasons]
            if finish_reasons is not None:
                reasons = [r for r in itertools.islice(finish_reasons, _MAX_REASONS) if isinstance(r, str)]
                if reasons:
                    s.set_attribute(FINISH_REASONS, reasons)
            if isinstance(id, str) and id:
                s.set_attribute(RESPONSE_ID, id)
        except Exception as exc:
            internal_error("llm set_response", exc)

    def set_request(self, **params: Any) -> None:
        """Request parameters by their client names (``max_tokens=``, ``temperature=``, ``top_p=``, ``stop=``...)."""
        try:
            for key, value in params.items():
                self._param(key, value)
        except Exception as exc:
            internal_error("llm set_request", exc)

    def set_input(self, value: Any, name: str = "prompt") -> None:
        """The prompt (a str or a list of chat messages); recorded only with ``capture_io=True``."""
        if self._capture:
            try:
                self._write_input(name, value)
            except Exception as exc:
                internal_error("llm input capture", exc)

    def set_output(self, value: Any) -> None:
        """The completion text; recorded only with ``capture_io=True``."""
        if self._capture:
            try:
                self._write_output(value)
            except Exception as exc:
                internal_error("llm output capture", exc)

    def record_token(self, count: int = 1) -> None:
        """``count`` output tokens arrived now: time to first token and time per output token follow."""
        now = _perf_counter()
        n = _as_int(count)
        if n is None or n < 0:
            n = 1  # a counter's odd answer must not break the stream
        if self._first is None:
            self._first = now
            self._first_count = n
        self._last = now
        self._count += n

    # -- inside ---------------------------------------------------------------------------

    def _param(self, key: str, value: Any) -> None:
        s = self._span
        if key in _FLOAT_PARAMS:
            number = _as_float(value)
            if number is not None:
                s.set_attribute(_FLOAT_PARAMS[key], number)
        elif key in _INT_PARAMS:
            whole = _as_int(value)
            if whole is not None:
                s.set_attribute(_INT_PARAMS[key], whole)
        elif key in _STOP_PARAMS:
            if isinstance(value, str):
                value = [value]
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value[:16]):
                s.set_attribute(_STOP_PARAMS[key], [str(v) for v in value[:16]])
        elif key == "model" and isinstance(value, str) and value:
            s.set_attribute(REQUEST_MODEL, value)

    def _item(self, item: Any, count_tokens: Callable[[Any], int] | None) -> None:
        """One item of a stream: its tokens counted and timed, its text kept (bounded) when capturing."""
        cls = type(item)
        if count_tokens is not None:
            try:
                n = count_tokens(item)
            except Exception as exc:
                internal_error("llm count_tokens", exc)
                n = 1
        elif cls is str or cls is int or cls is bytes:
            n = 1
        elif cls is list or cls is tuple:
            n = len(item)  # a step's token ids
        else:
            n = 1
            self._chunk(item)
        self.record_token(n)
        text = self._text
        if text is not None and cls is str and len(text) < _TEXT_PIECES:
            text.append(item)

    def _chunk(self, chunk: Any) -> None:
        """A client's stream chunk (OpenAI-shaped): usage, model and finish reasons when it carries them."""
        usage = _field(chunk, "usage")
        if usage is not None:
            self._usage(usage)
        model = _field(chunk, "model")
        if isinstance(model, str) and model and RESPONSE_MODEL not in self._span.attributes:
            self._span.set_attribute(RESPONSE_MODEL, model)
        choices = _field(chunk, "choices")
        if isinstance(choices, (list, tuple)) and choices:
            choice = choices[0]
            reason = _field(choice, "finish_reason")
            if isinstance(reason, str) and reason:
                self.set_response(finish_reasons=[reason])
            text = self._text
            if text is not None and len(text) < _TEXT_PIECES:
                content = _field(_field(choice, "delta"), "content")
                if isinstance(content, str):
                    text.append(content)

    def _usage(self, usage: Any) -> None:
        prompt = _field(usage, "prompt_tokens")
        if prompt is None:
            prompt = _field(usage, "input_tokens")
        completion = _field(usage, "completion_tokens")
        if completion is None:
            completion = _field(usage, "output_tokens")
        self.set_usage(prompt, completion)

    def _end_with(self, result: Any) -> None:
        """Record what the call returned (a failure to read it is logged, never raised) and end the span."""
        try:
            try:
                self._result(result)
            except Exception as exc:
                internal_error("llm response", exc)  # raises again a signal handler's exception
        finally:
            self._finish()  # the span ends whatever happened reading the result

    def _result(self, result: Any) -> None:
        """A client's response (OpenAI- or Anthropic-shaped): usage, model, id, finish reasons, text."""
        if isinstance(result, (str, bytes, int, float)) or result is None:
            if self._capture and isinstance(result, str):
                self._write_output(result)
            return
        usage = _field(result, "usage")
        if usage is not None:
            self._usage(usage)
        model, response_id = _field(result, "model"), _field(result, "id")
        reasons: list[str] = []
        text: str | None = None
        choices = _field(result, "choices")
        if isinstance(choices, (list, tuple)):
            for choice in choices[:_MAX_REASONS]:
                reason = _field(choice, "finish_reason")
                if isinstance(reason, str):
                    reasons.append(reason)
            if choices:
                first = choices[0]
                content = _field(_field(first, "message"), "content")
                text = content if isinstance(content, str) else _field(first, "text")
        stop = _field(result, "stop_reason")
        if isinstance(stop, str):
            reasons.append(stop)
        self.set_response(
            model if isinstance(model, str) else None,
            reasons or None,
            response_id if isinstance(response_id, str) else None,
        )
        if self._capture:
            self._write_output(text if isinstance(text, str) else result)

    def _write_input(self, name: str, value: Any) -> None:
        from .redaction import capture_value

        s = self._span
        if _is_messages(value):
            self._write_messages(value)
            return
        room = _room(s, 2, 2)  # half the budget: the completion needs room too
        if room is None:
            return
        text = capture_value(name, value, max_length=room)
        text = text if isinstance(text, str) else _json(text)
        message = {"role": "user", "parts": [{"type": "text", "content": text}]}
        s.set_attribute("gen_ai.input.messages", _json([message]))
        s.set_attribute("input.value", text)
        s.set_attribute("input.mime_type", "text/plain")

    def _write_messages(self, messages: Any) -> None:
        """Chat messages as gen_ai.input.messages, input.value and llm.input_messages.N, in half the budget left.

        The latest turns are kept when not all fit (halving their number until they do);
        those left out are counted in ``autotrace.capture.dropped``.
        """
        from .redaction import DROPPED_KEY, _budget, _cost, captured_bytes

        s = self._span
        allowed = (_budget() - captured_bytes(s.attributes)) // 2
        total = len(messages)
        kept = list(messages[-_MAX_MESSAGES:])
        while kept:
            n = len(kept)
            each = max(16, (allowed - 3 * 80 * n) // (3 * n))  # 80: the JSON and keys around one message
            attrs = _message_attributes(kept, each)
            if sum(_cost(v) for v in attrs.values()) <= allowed:
                s.set_attributes(attrs)
                break
            kept = kept[n - n // 2 :]
        if len(kept) < total:
            s.set_attribute(DROPPED_KEY, int(s.attributes.get(DROPPED_KEY, 0) or 0) + total - len(kept))

    def _write_output(self, value: Any) -> None:
        from .redaction import capture_value

        s = self._span
        chat = s.attributes.get(OPERATION) == "chat"
        room = _room(s, 3 if chat else 2, 1)
        if room is None:
            return
        text = capture_value("completion", value, max_length=room)
        text = text if isinstance(text, str) else _json(text)
        message: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": text}]}
        reasons = s.attributes.get(FINISH_REASONS)
        if reasons:
            message["finish_reason"] = reasons[0]
        s.set_attribute("gen_ai.output.messages", _json([message]))
        s.set_attribute("output.value", text)
        s.set_attribute("output.mime_type", "text/plain")
        if chat:  # Phoenix's chat view; a text completion is shown from output.value
            s.set_attribute("llm.output_messages.0.message.role", "assistant")
            s.set_attribute("llm.output_messages.0.message.content", text)

    def _finish(self) -> None:
        """Write what is known at the end: latencies, counted tokens, streamed text, the OpenInference names."""
        s = self._span
        if s.__class__ is not Span or s.end_time_unix_nano is not None:  # type: ignore[union-attr]
            return
        try:
            now = _perf_counter()
            s.set_attribute(LATENCY_E2E, now - self._start)
            first = self._first
            if first is not None:
                ttft = first - self._start
                s.set_attribute(LATENCY_TTFT, ttft)
                s.set_attribute(TIME_TO_FIRST_CHUNK, ttft)
                s.set_attribute(LATENCY_DECODE, self._last - first)
                after_first = self._count - self._first_count
                if after_first > 0:
                    s.set_attribute(LATENCY_TPOT, (self._last - first) / after_first)
                if OUTPUT_TOKENS not in s.attributes:
                    s.set_attribute(OUTPUT_TOKENS, self._count)
            if self._error is not None and ERROR_TYPE not in s.attributes:
                s.set_attribute(ERROR_TYPE, class_name(self._error))
            if self._text and "output.value" not in s.attributes:
                self._write_output("".join(self._text))
            s.set_attributes(openinference_attributes(s.attributes))
        except Exception as exc:
            internal_error("llm span", exc)
        for observer in list(observers):
            try:
                observer(s)  # type: ignore[arg-type]
            except Exception as exc:
                internal_error(f"llm observer {observer!r}", exc)


def _message_attributes(messages: list[Any], each: int) -> dict[str, Any]:
    """The input attributes of chat messages, each content redacted and cut to ``each`` characters."""
    from .redaction import capture_value

    semconv: list[dict[str, Any]] = []
    plain: list[dict[str, str]] = []
    flat: dict[str, Any] = {}
    for i, message in enumerate(messages):
        role = _field(message, "role")
        role = role if isinstance(role, str) else "user"
        content = capture_value("content", _field(message, "content"), max_length=each)
        content = content if isinstance(content, str) else _json(content)
        semconv.append({"role": role, "parts": [{"type": "text", "content": content}]})
        plain.append({"role": role, "content": content})
        flat[f"llm.input_messages.{i}.message.role"] = role
        flat[f"llm.input_messages.{i}.message.content"] = content
    return {
        "gen_ai.input.messages": _json(semconv),
        "input.value": _json(plain),
        "input.mime_type": "application/json",
        **flat,
    }


_TEXT_PIECES = 4096
"""Stream pieces kept for output.value: enough for any capture_max_length, bounded for an endless stream."""


def _room(span: Any, copies: int, share: int) -> int | None:
    """Characters for each of ``copies`` copies of a text within 1/``share`` of the span's budget left; None: spent."""
    from .redaction import DROPPED_KEY, _budget, captured_bytes

    left = (_budget() - captured_bytes(span.attributes)) // share
    room = (left - 64 * copies) // copies  # 64: the JSON around a message
    if room < 16:
        span.set_attribute(DROPPED_KEY, int(span.attributes.get(DROPPED_KEY, 0) or 0) + 1)
        return None
    return room


def _is_messages(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    return (isinstance(first, Mapping) and "role" in first) or (not isinstance(first, str) and hasattr(first, "role"))


# -- the decorator and context manager -------------------------------------------------------


class LLMCall:
    """What ``autotrace.llm(...)`` returns: a decorator, and a context manager yielding an ``LLMSpan``."""

    def __init__(
        self,
        operation: str,
        model: str | None,
        provider: str | None,
        name: str | None,
        kind: SpanKind,
        capture_io: bool,
        attributes: Mapping[str, Any] | None,
        count_tokens: Callable[[Any], int] | None,
    ) -> None:
        self.operation = operation
        self.model = model
        self.provider = provider
        self.kind = kind
        self.capture_io = capture_io
        self.count_tokens = count_tokens
        self.name = name if name is not None else (f"{operation} {model}" if model else operation)
        self._auto_name = name is None
        static: dict[str, Any] = {OPERATION: operation}
        if provider:
            static[PROVIDER] = provider
        if model:
            static[REQUEST_MODEL] = model
        if attributes:
            static.update(attributes)
        self.static = static
        self._open: list[tuple[Any, LLMSpan]] = []

    # -- as a context manager ---------------------------------------------------------------

    def __enter__(self) -> LLMSpan:
        s = _open_span(self.name, kind=self.kind, attributes=self.static)
        s.__enter__()
        rec = LLMSpan(s, capture_io=self.capture_io)
        self._open.append((s, rec))
        return rec

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        s, rec = self._pop()
        if s is None:
            return
        if exc is not None:
            rec._error = type(exc)  # the type only: the exception would hold this frame, a cycle
        rec._finish()
        s.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> LLMSpan:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _pop(self) -> tuple[Any, LLMSpan]:
        """The entry this ``with`` opened: the one whose span is current (one llm() object may be shared)."""
        opened = self._open
        cur = current_span()
        for i in range(len(opened) - 1, -1, -1):
            if opened[i][0] is cur:
                return opened.pop(i)
        try:
            return opened.pop()
        except IndexError:
            return None, None  # type: ignore[return-value]

    # -- as a decorator ---------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        from .decorators import _identity, traced

        inner_func = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        if not callable(inner_func):
            raise TypeError(f"@autotrace.llm needs a function or method; got {type(func).__name__}")
        try:
            signature: inspect.Signature | None = inspect.signature(inner_func)
        except (TypeError, ValueError):
            signature = None
        target = inner_func
        while isinstance(target, functools.partial):
            target = target.func
        if inspect.isasyncgenfunction(target):
            inner = self._asyncgen(inner_func, signature)
        elif inspect.iscoroutinefunction(target):
            inner = self._async(inner_func, signature)
        elif inspect.isgeneratorfunction(target):
            inner = self._gen(inner_func, signature)
        else:
            inner = self._sync(inner_func, signature)
        try:
            functools.update_wrapper(inner, inner_func)
        except Exception:
            pass
        attrs = {**_identity(inner_func), **self.static}
        wrapped: Any = inner
        if isinstance(func, classmethod):
            wrapped = classmethod(inner)
        elif isinstance(func, staticmethod):
            wrapped = staticmethod(inner)
        return traced(name=self.name, kind=self.kind, attributes=attrs)(wrapped)  # type: ignore[no-any-return]

    def _begin(
        self, signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> LLMSpan | None:
        """The recorder of this call's span (None when unsampled), with the request read from the arguments."""
        s = _cv_get()
        if s.__class__ is not Span:
            return None  # unsampled: nothing to write, and no span object to make
        rec = LLMSpan(s, capture_io=self.capture_io)
        try:
            bound = _bind(signature, args, kwargs)
            for key, value in bound.items():
                rec._param(key, value)
            model = s.attributes.get(REQUEST_MODEL)
            if self._auto_name and isinstance(model, str) and model and model != self.model:
                s.update_name(f"{self.operation} {model}")  # the model this call asked for
            if self.capture_io:
                prompt = _prompt(bound)
                if prompt is not None:
                    rec._write_input(*prompt)
        except Exception as exc:
            internal_error("llm request", exc)
        return rec

    def _sync(self, func: Callable[..., Any], signature: inspect.Signature | None) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            rec = self._begin(signature, args, kwargs)
            if rec is None:
                return func(*args, **kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                rec._error = type(exc)  # the type only: the exception would hold this frame, a cycle
                rec._finish()
                raise
            rec._end_with(result)
            return result

        return inner

    def _async(self, func: Callable[..., Any], signature: inspect.Signature | None) -> Callable[..., Any]:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            rec = self._begin(signature, args, kwargs)
            if rec is None:
                return await func(*args, **kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                rec._error = type(exc)  # the type only: the exception would hold this frame, a cycle
                rec._finish()
                raise
            rec._end_with(result)
            return result

        return inner

    def _gen(self, func: Callable[..., Any], signature: inspect.Signature | None) -> Callable[..., Any]:
        count_tokens = self.count_tokens

        def inner(*args: Any, **kwargs: Any) -> Any:
            rec = self._begin(signature, args, kwargs)
            gen = func(*args, **kwargs)
            if rec is None:
                return (yield from gen)
            send: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    try:
                        if thrown is None:
                            item = gen.send(send)
                        else:
                            exc, thrown = thrown, None
                            item = gen.throw(exc)
                    except StopIteration as stop:
                        return stop.value
                    _observe(rec, item, count_tokens)
                    try:
                        send = yield item
                    except GeneratorExit:
                        gen.close()
                        raise
                    except BaseException as exc:  # thrown in by the consumer: pass it on
                        thrown, send = exc, None
            except GeneratorExit:
                raise
            except BaseException as exc:
                rec._error = type(exc)  # the type only: the exception would hold this frame, a cycle
                raise
            finally:
                rec._finish()

        return inner

    def _asyncgen(self, func: Callable[..., Any], signature: inspect.Signature | None) -> Callable[..., Any]:
        count_tokens = self.count_tokens

        async def inner(*args: Any, **kwargs: Any) -> Any:
            rec = self._begin(signature, args, kwargs)
            agen = func(*args, **kwargs)
            send: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    try:
                        if thrown is None:
                            item = await agen.asend(send)
                        else:
                            exc, thrown = thrown, None
                            item = await agen.athrow(exc)
                    except StopAsyncIteration:
                        return
                    if rec is not None:
                        _observe(rec, item, count_tokens)
                    try:
                        send = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:
                        thrown, send = exc, None
            except GeneratorExit:
                raise
            except BaseException as exc:
                if rec is not None:
                    rec._error = type(exc)  # the type only: the exception would hold this frame, a cycle
                raise
            finally:
                if rec is not None:
                    rec._finish()

        return inner


def _observe(rec: LLMSpan, item: Any, count_tokens: Callable[[Any], int] | None) -> None:
    try:
        rec._item(item, count_tokens)
    except Exception as exc:
        internal_error("llm stream", exc)


def _bind(signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name (``**kwargs`` spread out), or by position and keyword when it cannot bind."""
    if signature is not None:
        try:
            binding = signature.bind_partial(*args, **kwargs)
            binding.apply_defaults()  # the request was made with them: max_tokens=128 unless told otherwise
            out: dict[str, Any] = {}
            for i, (key, value) in enumerate(binding.arguments.items()):
                kind = signature.parameters[key].kind
                if kind is inspect.Parameter.VAR_KEYWORD and isinstance(value, dict):
                    out.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL and not (i == 0 and key in ("self", "cls")):
                    out[key] = value
            return out
        except TypeError:
            pass
    return {**{f"arg{i}": v for i, v in enumerate(args)}, **kwargs}


def _prompt(bound: Mapping[str, Any]) -> tuple[str, Any] | None:
    for key in _PROMPT_NAMES:
        if key in bound:
            return key, bound[key]
    for key, value in bound.items():
        if key not in _INT_PARAMS and key not in _FLOAT_PARAMS and key != "model":
            return key, value
    return None


# -- the public function -------------------------------------------------------------------


@overload
def llm(operation: F, /) -> F: ...


@overload
def llm(
    operation: str = "text_completion",
    model: str | None = None,
    provider: str | None = None,
    *,
    name: str | None = None,
    kind: SpanKind | str = "client",
    capture_io: bool = False,
    attributes: Mapping[str, Any] | None = None,
    count_tokens: Callable[[Any], int] | None = None,
) -> LLMCall: ...


def llm(
    operation: Any = "text_completion",
    model: str | None = None,
    provider: str | None = None,
    *,
    name: str | None = None,
    kind: SpanKind | str = "client",
    capture_io: bool = False,
    attributes: Mapping[str, Any] | None = None,
    count_tokens: Callable[[Any], int] | None = None,
) -> Any:
    """Trace a model call as an LLM span: a decorator, or ``with autotrace.llm("chat", model="m") as s:``.

    ``operation`` is ``gen_ai.operation.name`` (chat, text_completion, embeddings...),
    ``model`` the requested model and ``provider`` ``gen_ai.provider.name``; the span
    is named ``"{operation} {model}"`` unless ``name`` is given, and is a CLIENT span
    unless ``kind`` says otherwise (``"server"`` for the serving side). A decorated
    function's ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``...
    arguments are recorded as request parameters, and a returned client response
    (OpenAI- or Anthropic-shaped) gives usage, response model and finish reasons.
    A generator or async generator is a token stream: each item counts as one token
    (a list or tuple as its length) unless ``count_tokens(item)`` says otherwise, and
    time to first token, time per output token and decode time are recorded.
    ``capture_io=True`` records the prompt and completion text, redacted and cut.
    Bare ``@autotrace.llm`` is ``@autotrace.llm()``.
    """
    if callable(operation) and not isinstance(operation, str):
        return llm()(operation)
    if not isinstance(operation, str) or not operation:
        raise TypeError(f"autotrace.llm operation must be a non-empty str; got {operation!r}")
    for what, value in (("model", model), ("provider", provider), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"autotrace.llm {what} must be a str or None; got {type(value).__name__}")
    if attributes is not None and not isinstance(attributes, Mapping):
        raise TypeError(f"autotrace.llm attributes must be a mapping; got {type(attributes).__name__}")
    if count_tokens is not None and not callable(count_tokens):
        raise TypeError(f"autotrace.llm count_tokens must be callable; got {type(count_tokens).__name__}")
    return LLMCall(operation, model, provider, name, SpanKind.coerce(kind), bool(capture_io), attributes, count_tokens)
