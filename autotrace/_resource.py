"""The resource attributes in force: who is sending the spans (``service.name``, ``telemetry.sdk.*``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from ._version import __version__

__all__ = ["build", "current", "install"]


def default_service_name() -> str:
    """``unknown_service:<program>``, as OpenTelemetry names a service nobody named."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return "unknown_service:" + os.path.basename(argv0)


def build(
    attributes: Mapping[str, Any], service_name: str | None = None, service_version: str | None = None
) -> dict[str, Any]:
    """Resource attributes: the given ones, ``service.*`` and ``telemetry.sdk.*``."""
    attrs: dict[str, Any] = dict(attributes)
    attrs["service.name"] = service_name or attrs.get("service.name") or default_service_name()
    if service_version is not None:
        attrs["service.version"] = service_version
    attrs["telemetry.sdk.name"] = "autotrace"
    attrs["telemetry.sdk.language"] = "python"
    attrs["telemetry.sdk.version"] = __version__
    return attrs


class _Resource:
    """The one holder of the resource in force (configure() installs a new one)."""

    __slots__ = ("attrs",)

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}


_RESOURCE = _Resource()


def install(attrs: dict[str, Any]) -> None:
    """Make ``attrs`` the resource every exporter and encoder reads."""
    _RESOURCE.attrs = attrs


def current() -> dict[str, Any]:
    """The resource attributes in force (the defaults before any configure())."""
    if not _RESOURCE.attrs:
        _RESOURCE.attrs = build({})
    return _RESOURCE.attrs
