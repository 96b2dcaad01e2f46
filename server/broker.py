"""The embedded MQTT broker (amqtt) for zero set-up: `ota broker run`, the demo, a first trial.

Production points `broker_url` at Mosquitto or an MQTT cluster instead; nothing else changes
(docs/decisions/0004-embedded-broker.md). It enforces what the generated Mosquitto
configuration does (`server.broker_access`): no anonymous clients, the server's own login,
and each device's login checked against the server's database (its id and the broker secret
it got at enrollment), each allowed only its own topics. `RegistryAccessPlugin` is that check,
in amqtt's plugin API (an auth plugin and a topic plugin in one, so both see the same logins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session as MqttSession
from sqlalchemy.exc import SQLAlchemyError

from server.broker_access import (
    BrokerAccess,
    DeviceLogins,
    Login,
    client_id_allowed,
    may_publish,
    may_receive,
    may_subscribe,
    server_login,
)
from server.db import make_engine, make_sessions

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
PLUGIN = "server.broker.RegistryAccessPlugin"


def broker_config(host: str, port: int, access: BrokerAccess) -> dict[str, Any]:
    """amqtt 0.12's config: one TCP listener, our access plugin, none of the logging/$SYS
    plugins (a plugins section replaces amqtt's defaults, anonymous access among them)."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            PLUGIN: {
                "db_url": access.db_url,
                "server_user": access.server_user,
                "server_password_hash": access.server_password_hash,
            }
        },
    }


class RegistryAccessPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # untyped
    """Logins from the server's device registry, topics by `server.broker_access`'s rules."""

    @dataclass
    class Config:
        db_url: str
        server_password_hash: str
        server_user: str

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        config = context.config
        self._access = BrokerAccess(config.db_url, config.server_password_hash, config.server_user)
        self._engine = make_engine(config.db_url)
        self._devices = DeviceLogins(make_sessions(self._engine))
        self._logins: dict[str, Login] = {}  # by client id, while admitted

    async def authenticate(self, *, session: MqttSession) -> bool:
        client_id = str(session.client_id or "")
        self._logins.pop(client_id, None)
        login = await self._login(str(session.username or ""), str(session.password or ""))
        if login is None or not client_id_allowed(login, client_id):
            log.info("refused MQTT login %r (client id %r)", session.username, client_id)
            return False
        self._logins[client_id] = login
        return True

    async def _login(self, user: str, password: str) -> Login | None:
        if not user:
            return None  # no anonymous clients
        login = server_login(self._access, user, password)
        if login is not None:
            return login
        try:
            return await asyncio.to_thread(self._devices.check, user, password)
        except SQLAlchemyError as exc:  # the registry unreadable: admit no device
            log.warning("cannot check MQTT login %r against the registry: %s", user, exc)
            return None

    async def topic_filtering(
        self,
        *,
        session: MqttSession | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        if session is None or topic is None:
            return False
        login = self._logins.get(str(session.client_id))
        if login is None or login.user != session.username:
            return False
        if action == Action.PUBLISH:
            return may_publish(login, topic)
        if action == Action.SUBSCRIBE:
            return may_subscribe(login, topic)
        return may_receive(login, topic)

    async def close(self) -> None:
        self._engine.dispose()


class ReceiveCheckedBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt 0.12 sends retained messages without the RECEIVE check it makes for live ones,
    and on every connect it sends those of every topic filter any client holds: a device
    would hear another channel's retained notice. This sends a client the retained messages
    of its own subscriptions only, and only those it may receive
    (tests/server/test_broker_rules.py shows the leak)."""

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: MqttSession
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if all(held.client_id != session.client_id for held, _ in holders):
            return  # another client's filter
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                retained_qos = min(qos, retained.qos or qos)
                await handler.mqtt_publish(topic, retained.data, retained_qos, retain=True)


class EmbeddedBroker:
    """amqtt's Broker on its own asyncio loop in a background thread."""

    def __init__(self, host: str, port: int, access: BrokerAccess) -> None:
        self.host = host
        self.port = port
        self.access = access
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
            broker = ReceiveCheckedBroker(broker_config(self.host, self.port, self.access))
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


def run_embedded_broker(host: str, port: int, access: BrokerAccess) -> None:
    """Serve until SIGINT/SIGTERM (for `ota broker run`)."""
    asyncio.run(_serve_until_signal(host, port, access))


async def _serve_until_signal(host: str, port: int, access: BrokerAccess) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = ReceiveCheckedBroker(broker_config(host, port, access))
    await broker.start()
    print(f"embedded MQTT broker listening on mqtt://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
