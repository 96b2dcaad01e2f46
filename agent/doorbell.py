"""MQTT as a doorbell: hear notices and commands, publish reports as they happen.

Nothing depends on a message arriving: after every (re)connect the runner asks the server
over HTTP anyway, and reports leave the outbox only when the server acknowledged them over
HTTP. paho 2.x idioms: CallbackAPIVersion.VERSION2, subscriptions made in on_connect so they
survive reconnects, a persistent session (clean_session False) at QoS 1, manual acks so a
command is acknowledged to the broker only after the handler stored it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import ConfigError
from wire import channel_topic, device_cmd_topic, device_status_topic

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://host:port` or `mqtts://host:port` -> (host, port, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ConfigError(f"broker URL must look like mqtt://host:port, got {url!r}")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


class Doorbell:
    """One paho client per device, its network loop in paho's own thread."""

    def __init__(
        self,
        broker_url: str,
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
        self._host, self._port, tls = parse_broker_url(broker_url)
        self._topics = [channel_topic(channel, model), device_cmd_topic(device_id)]
        self._status_topic = device_status_topic(device_id)
        self._on_message = on_message
        self._on_connected = on_connected
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"ota-agent-{device_id}",
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
        self._client.on_message = self._handle_message

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff by itself."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

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
        client.subscribe([(topic, 1) for topic in self._topics])
        self._on_connected()

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

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))
        # acked only after the handler returned: a command is durable by then (or refused)
        client.ack(msg.mid, msg.qos)
