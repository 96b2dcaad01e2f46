"""The embedded MQTT broker (amqtt) for zero set-up: `ota broker run`, the demo, a first trial.

Production points `broker_url` at Mosquitto or an MQTT cluster instead; nothing else changes
(docs/decisions/0004-embedded-broker.md). Anonymous clients are allowed for now, on the
address given (loopback by default); TLS and per-device ACLs come later.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt 0.12's config: one TCP listener, anonymous auth, none of the logging/$SYS plugins."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """amqtt's Broker on its own asyncio loop in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        """Returns once the broker listens; raises what amqtt raised if it could not start."""
        if self._thread is not None:
            raise RuntimeError("the embedded broker is already running")
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise TimeoutError(f"the embedded broker did not start within {START_TIMEOUT_S}s")
        error = self._take_error()
        if error is not None:
            self._thread.join()
            self._thread = None
            raise error

    def _take_error(self) -> BaseException | None:
        error, self._error = self._error, None
        return error

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed already
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            broker = Broker(broker_config(self.host, self.port))
            await broker.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await broker.shutdown()


def run_embedded_broker(host: str = "127.0.0.1", port: int = 1883) -> None:
    """Serve until SIGINT/SIGTERM (for `ota broker run`)."""
    asyncio.run(_serve_until_signal(host, port))


async def _serve_until_signal(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(broker_config(host, port))
    await broker.start()
    print(f"embedded MQTT broker listening on mqtt://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
