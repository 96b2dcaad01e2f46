"""MQTT as a doorbell: hear notices and commands, publish reports as they happen.

Nothing depends on a message arriving: after every (re)connect the runner asks the server
over HTTP anyway, and reports leave the outbox only when the server acknowledged them over
HTTP. paho 2.x idioms: CallbackAPIVersion.VERSION2, subscriptions made in on_connect so they
survive reconnects, a persistent session (clean_session False) at QoS 1, manual acks so a
command is acknowledged to the broker only after the handler stored it.

Given the nodes of a broker cluster, the device starts on one picked by its id (so a fleet
spreads over the nodes) and moves to the next whenever its connection is lost or refused; the
cluster keeps its session, so it resumes there (docs/decisions/0022).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import ConfigError
from wire import channel_topic, device_client_id, device_cmd_topic, device_status_topic

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
MAX_BROKER_URLS = 16  # the nodes of one broker cluster a device may be told about
SUBSCRIBE_RETRY_S = 2.0  # a refused subscription is asked for again after this


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://host:port` or `mqtts://host:port` -> (host, port, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ConfigError(f"broker URL must look like mqtt://host:port, got {url!r}")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def parse_broker_urls(urls: Sequence[str]) -> tuple[list[tuple[str, int]], bool]:
    """The (host, port) of each of 1..MAX_BROKER_URLS broker URLs, and whether they use TLS
    (all of them or none: one client, one TLS set-up)."""
    if not 1 <= len(urls) <= MAX_BROKER_URLS:
        raise ConfigError(f"give 1 to {MAX_BROKER_URLS} broker URLs, got {len(urls)}")
    parsed = [parse_broker_url(url) for url in urls]
    if len({tls for _, _, tls in parsed}) > 1:
        raise ConfigError("broker URLs must all be mqtt:// or all be mqtts://")
    return [(host, port) for host, port, _ in parsed], parsed[0][2]


def first_broker(device_id: str, count: int) -> int:
    """Which of `count` brokers a device tries first: spread by its id, stable across runs."""
    return zlib.crc32(device_id.encode()) % count


class Doorbell:
    """One paho client per device, its network loop in paho's own thread; `broker_urls` one
    URL or the nodes of a cluster to move between. `on_connected` is called on each connect
    and again once subscriptions the broker refused at first are granted: each time, the
    runner asks the server over HTTP for what the doorbell may have missed."""

    def __init__(
        self,
        broker_urls: str | Sequence[str],
        *,
        device_id: str,
        channel: str,
        model: str,
        on_message: MessageHandler,
        on_connected: Callable[[], None],
        username: str = "",
        password: str = "",
        ca_file: str = "",
    ) -> None:
        urls = [broker_urls] if isinstance(broker_urls, str) else list(broker_urls)
        self._brokers, tls = parse_broker_urls(urls)
        self._scheme = "mqtts" if tls else "mqtt"
        self._current = first_broker(device_id, len(self._brokers))
        self._attempted = False  # the first attempt goes to first_broker's pick
        self._topics = [channel_topic(channel, model), device_cmd_topic(device_id)]
        self._status_topic = device_status_topic(device_id)
        self._on_message = on_message
        self._on_connected = on_connected
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_client_id(device_id),  # the only one brokers admit for it
            clean_session=False,
            manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password or None)
        if tls:
            self._client.tls_set(ca_certs=ca_file or None)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_pre_connect = self._handle_pre_connect
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe
        # SUBSCRIBE's mid -> its topics and whether it asks again for refused ones; a SUBACK
        # that arrives before its mid is noted here (the timer thread asks again) waits in
        # _early. One small lock for both, never held while calling paho.
        self._subscribing: dict[int, tuple[list[str], bool]] = {}
        self._early: dict[int, Any] = {}
        self._ungranted = set(self._topics)  # since the last connect
        self._lock = threading.Lock()

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff by itself."""
        host, port = self._brokers[self._current]
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker granted every subscription asked for since."""
        with self._lock:
            return self.connected and not self._ungranted

    @property
    def broker(self) -> str:
        """The broker (mqtt://host:port) connected to or tried next."""
        return f"{self._scheme}://{self._where}"

    def publish_status(self, payload: bytes) -> None:
        """Best effort: the HTTP outbox is what guarantees delivery."""
        if self.connected:
            self._client.publish(self._status_topic, payload, qos=1)

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker %s refused the connection: %s", self._where, reason_code)
            return
        resumed = " (session resumed)" if flags.session_present else ""
        log.info("broker %s connected%s", self._where, resumed)
        with self._lock:
            self._ungranted = set(self._topics)
            self._subscribing.clear()  # asked on a lost connection: no SUBACK will come
            self._early.clear()
        self._subscribe(self._topics, again=False)
        self._on_connected()

    def _subscribe(self, topics: list[str], *, again: bool) -> None:
        result, mid = self._client.subscribe([(topic, 1) for topic in topics])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected: on_connect subscribes to everything
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None:
                self._subscribing[mid] = (topics, again)
        if early is not None:
            self._answered(topics, again, early)

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        with self._lock:
            asked = self._subscribing.pop(mid, None)
            if asked is None:
                self._early[mid] = reason_codes
                return
        self._answered(*asked, reason_codes)

    def _answered(self, topics: list[str], again: bool, reason_codes: Any) -> None:
        """A broker may refuse a subscription for a while (a cluster electing the leader of
        its session store): ask again until it is granted, as long as we are connected. Once
        what was refused is granted, wake the runner as on a connect: a notice or command
        sent meanwhile never reached us, and may not be retained, so ask the server."""
        refused = refused_topics(topics, reason_codes)
        with self._lock:
            self._ungranted -= set(topics) - set(refused)
        if refused:
            log.warning("broker %s refused %s; asking again", self._where, ", ".join(refused))
            retry = threading.Timer(SUBSCRIBE_RETRY_S, self._resubscribe, args=(refused,))
            retry.daemon = True
            retry.start()
        elif again:
            log.info("broker %s granted %s at last", self._where, ", ".join(topics))
            self._on_connected()

    def _resubscribe(self, topics: list[str]) -> None:
        if self.connected:  # else on_connect subscribes to everything anyway
            self._subscribe(topics, again=True)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.info("broker %s lost (%s); reconnecting", self._where, reason_code)
        else:
            log.info("broker %s disconnected", self._where)

    def _handle_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """Before each attempt but the first (each follows a lost or failed connection), move
        to the next broker. paho reads its host and port right after this; its public setters
        refuse while it is reconnecting, hence the attributes they would set."""
        if not self._attempted:
            self._attempted = True
            return
        if len(self._brokers) > 1:
            self._current = (self._current + 1) % len(self._brokers)
            client._host, client._port = self._brokers[self._current]
            log.info("trying broker %s", self._where)

    @property
    def _where(self) -> str:
        return f"{self._client.host}:{self._client.port}"

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))
        # acked only after the handler returned: a command is durable by then (or refused)
        client.ack(msg.mid, msg.qos)


def refused_topics(topics: list[str], reason_codes: Any) -> list[str]:
    """The topics of one SUBSCRIBE that its SUBACK refused (reason codes in topic order)."""
    return [t for t, code in zip(topics, reason_codes, strict=False) if code.is_failure]
