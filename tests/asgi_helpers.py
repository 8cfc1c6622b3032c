"""A real uvicorn server on loopback (port 0) in a thread, for the ASGI tests and the benchmark."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class Uvicorn:
    """uvicorn serving ``app`` on 127.0.0.1 with a free port, in a daemon thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only then (else ~40 ms per response).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "critical", "access_log": False, "lifespan": "auto", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> Uvicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
