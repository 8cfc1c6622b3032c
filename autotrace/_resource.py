"""The resource attributes in force: who is sending the spans (``service.name``, ``telemetry.sdk.*``)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from ._version import __version__

__all__ = ["build", "current", "install", "process_attributes"]


def default_service_name() -> str:
    """``unknown_service:<program>``, as OpenTelemetry names a service nobody named."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return "unknown_service:" + os.path.basename(argv0)


def process_attributes() -> dict[str, Any]:
    """This process's semantic-convention resource attributes: pid, executable, runtime, host name."""
    return {
        "process.pid": os.getpid(),
        "process.executable.name": os.path.basename(sys.executable or "python"),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": ".".join(str(part) for part in sys.version_info[:3]),
        "host.name": socket.gethostname(),
    }


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
    # Which process a span came from (semantic conventions), so that workers sending to one
    # server stay apart; configured values win. process.pid is refreshed in a forked child.
    for key, value in process_attributes().items():
        attrs.setdefault(key, value)
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


def _after_fork_in_child() -> None:
    """The resource names the process: a forked worker's spans must carry its own pid, not its parent's."""
    attrs = _RESOURCE.attrs
    if attrs and attrs.get("process.pid") == os.getppid():
        _RESOURCE.attrs = {**attrs, "process.pid": os.getpid()}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
