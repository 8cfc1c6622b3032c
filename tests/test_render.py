"""Tensor-aware capture: arrays summarised from metadata only, numpy scalars as numbers, a per-span byte budget."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

import autotrace
from tests.conftest import all_spans
from tests.otlp_check import spans_of, validate


class TouchedData(AssertionError):
    """A capture read a tensor's values."""


class FakeTensor:
    """A CUDA tensor stand-in: metadata readable, every way to reach its values recorded (and refused)."""

    calls: list[str]

    def __init__(self, shape: tuple[int, ...], dtype: str = "torch.float16", device: str = "cuda:0") -> None:
        self.calls = []
        self.shape = shape
        self.dtype = FakeDtype(dtype, 2)
        self.device = FakeDevice(device)

    def _touched(self, what: str) -> Any:
        self.calls.append(what)
        raise TouchedData(what)

    def tolist(self) -> Any:
        return self._touched("tolist")

    def cpu(self) -> Any:
        return self._touched("cpu")

    def item(self) -> Any:
        return self._touched("item")

    def numpy(self) -> Any:
        return self._touched("numpy")

    def __repr__(self) -> str:
        return self._touched("__repr__")  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return self._touched("__str__")  # type: ignore[no-any-return]

    def __iter__(self) -> Any:
        return self._touched("__iter__")

    def __len__(self) -> int:
        return self._touched("__len__")  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        return self._touched("__bool__")  # type: ignore[no-any-return]

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self._touched("__array__")


class FakeDtype:
    """torch.float16 as torch prints it."""

    def __init__(self, name: str, itemsize: int) -> None:
        self.name = name
        self.itemsize = itemsize

    def __str__(self) -> str:
        return self.name


class FakeDevice:
    """torch.device("cuda:0") as torch prints it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def test_fake_cuda_tensor_is_summarised_without_touching_its_values() -> None:
    """A tensor keeps shape, dtype, device and byte size; tolist/cpu/item/numpy/repr/iter are never called."""
    tensor = FakeTensor((1, 512))
    scalar = FakeTensor(())  # a 0-d CUDA tensor: item() would synchronise the device

    @autotrace.traced(capture_args=True, capture_result=True)
    def forward(hidden: Any, temperature: Any, batch: Any) -> Any:
        return hidden

    assert forward(tensor, scalar, [tensor, {"x": tensor}]) is tensor
    assert tensor.calls == [] and scalar.calls == []
    (s,) = all_spans()
    attrs = s.attributes
    assert attrs["code.function.args.hidden.shape"] == [1, 512]
    assert attrs["code.function.args.hidden.dtype"] == "float16"
    assert attrs["code.function.args.hidden.device"] == "cuda:0"
    assert attrs["code.function.args.hidden.nbytes"] == 1024
    assert attrs["code.function.args.temperature.shape"] == []
    assert attrs["code.function.args.temperature.device"] == "cuda:0"
    assert attrs["code.function.result.shape"] == [1, 512]
    batch = attrs["code.function.args.batch"]
    assert batch == (
        "[FakeTensor(shape=[1, 512], dtype=float16, device=cuda:0), "
        "{'x': FakeTensor(shape=[1, 512], dtype=float16, device=cuda:0)}]"
    )
    validate(autotrace.export_traces())


def test_huge_numpy_array_is_summarised_without_allocating_its_size() -> None:
    """A 10^8-element array costs a few kB of allocations to capture, not its 400 MB, and keeps its metadata."""
    big = np.broadcast_to(np.float32(0), (10**8,))  # no memory behind it: a copy or tolist() would show

    @autotrace.traced(capture_args=True)
    def embed(vectors: Any) -> None:
        return None

    embed(np.zeros(4, dtype=np.float32))  # warm up imports and caches outside the measurement
    autotrace.clear_traces()
    tracemalloc.start()
    try:
        embed(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak
    (s,) = all_spans()
    assert s.attributes["code.function.args.vectors.shape"] == [10**8]
    assert s.attributes["code.function.args.vectors.dtype"] == "float32"
    assert s.attributes["code.function.args.vectors.nbytes"] == 4 * 10**8


def test_numpy_scalars_and_zero_d_arrays_arrive_as_numbers() -> None:
    """np.float32, np.int64, np.bool_ and a 0-d array are captured as float, int and bool, typed so in OTLP."""

    @autotrace.traced(capture_args=True, capture_result=True)
    def score(a: Any, b: Any, c: Any, d: Any) -> Any:
        return np.float64(0.25)

    score(np.float32(0.5), np.int64(7), np.bool_(True), np.array(3))
    (s,) = all_spans()
    values = {k.rsplit(".", 1)[-1]: v for k, v in s.attributes.items() if k.startswith("code.function.")}
    assert values["a"] == 0.5 and type(values["a"]) is float
    assert values["b"] == 7 and type(values["b"]) is int
    assert values["c"] is True
    assert values["d"] == 3 and type(values["d"]) is int
    assert values["result"] == 0.25 and type(values["result"]) is float
    (span,) = spans_of(autotrace.export_traces())
    kinds = {kv["key"]: next(iter(kv["value"])) for kv in span["attributes"]}
    assert kinds["code.function.args.a"] == "doubleValue"
    assert kinds["code.function.args.b"] == "intValue"
    assert kinds["code.function.args.c"] == "boolValue"


def test_byte_budget_holds_with_a_hundred_large_arguments() -> None:
    """100 arguments of 20 kB stay within capture_max_bytes together; cut values end in …, the rest are counted."""
    from autotrace.redaction import DROPPED_KEY, captured_bytes

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, capture_max_bytes=3000))
    names = [f"a{i}" for i in range(100)]
    namespace: dict[str, Any] = {}
    exec(f"def many({', '.join(names)}): return None", namespace)
    many = autotrace.traced(capture_args=True)(namespace["many"])
    many(*["é" * 10_000 for _ in names])  # two bytes a character in UTF-8
    (s,) = all_spans()
    assert captured_bytes(s.attributes) <= 3000
    kept = [k for k in s.attributes if k.startswith("code.function.args.")]
    assert kept and all(s.attributes[k].endswith("…") for k in kept)
    assert s.attributes[DROPPED_KEY] == 100 - len(kept)
    validate(autotrace.export_traces())


def test_budget_is_shared_by_arguments_and_result() -> None:
    """The result gets only what the arguments left of the span's budget."""
    from autotrace.redaction import captured_bytes

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, capture_max_bytes=1500, capture_max_length=1000))

    @autotrace.traced(capture_args=True, capture_result=True)
    def echo(text: str) -> str:
        return text

    echo("z" * 5000)
    (s,) = all_spans()
    assert len(s.attributes["code.function.args.text"]) == 1001
    assert len(s.attributes["code.function.result"]) < 500
    assert captured_bytes(s.attributes) <= 1500


def test_secret_named_array_stays_redacted() -> None:
    """The secret-name rule runs before the array summary: an array named api_key is [REDACTED], no metadata."""

    @autotrace.traced(capture_args=True)
    def sign(api_key: Any) -> None:
        return None

    sign(np.zeros(3))
    (s,) = all_spans()
    assert s.attributes["code.function.args.api_key"] == "[REDACTED]"
    assert not any(k.startswith("code.function.args.api_key.") for k in s.attributes)


def test_summary_reads_no_array_library() -> None:
    """autotrace never imports numpy or torch itself; a plain object with a non-tuple shape is not an array."""
    from pathlib import Path

    import autotrace
    from autotrace.redaction import array_summary

    for path in Path(autotrace.__file__).parent.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import numpy" not in source and "import torch" not in source, path

    class Shaped:
        shape = "tall"
        dtype = "x"

    assert array_summary(Shaped()) is None
    assert array_summary([1, 2]) is None


@pytest.mark.parametrize("value", [np.zeros((2, 3), dtype=np.float16), np.empty((0, 4))])
def test_numpy_array_summary(value: Any) -> None:
    """A numpy array's summary is its shape, dtype name, device and nbytes."""
    from autotrace.redaction import array_summary

    summary = array_summary(value)
    assert summary is not None
    assert summary.attributes("x") == {
        "x.shape": list(value.shape),
        "x.dtype": str(value.dtype),
        "x.device": "cpu",
        "x.nbytes": value.nbytes,
    }
