"""The server's one MQTT client: publishes notices and commands, hears device reports.

paho 2.x idioms: CallbackAPIVersion.VERSION2, its own network thread (loop_start), reconnect
with backoff, subscriptions made in on_connect so they survive reconnects, and a persistent
session under a fixed client id so the broker queues QoS 1 reports while the server restarts.
A report heard here goes through the same idempotent ingestion as one POSTed over HTTP.

Every message on a status topic is a tick of this worker: one that is oversized, malformed,
of an unknown version or names another device than its topic is refused and counted, and a
handler that raises anything is logged and counted; `health()` shows both on `GET /health`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from server.api_models import WorkerHealth
from server.errors import ServiceError
from server.metrics import process_metrics
from server.workers import TickCounts, utc_now
from wire import (
    STATUS_WILDCARD,
    AvailabilityNotice,
    Command,
    ProtocolError,
    StatusReport,
    announce_topic,
    channel_topic,
    device_cmd_topic,
    device_id_from_status_topic,
)

log = logging.getLogger(__name__)

MAX_STATUS_BYTES: Final = 64 * 1024  # a status report is a few hundred bytes

ReportHandler = Callable[[str, StatusReport], None]
NoticeSource = Callable[[], Iterable[AvailabilityNotice]]


def parse_broker_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """`mqtt[s]://[user[:password]@]host[:port]` -> (host, port, tls, username, password)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    tls = parsed.scheme == "mqtts"
    user = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls, user, password


class MqttBridge:
    def __init__(
        self,
        broker_url: str,
        on_report: ReportHandler,
        *,
        client_id: str = "ota-server",
        current_notices: NoticeSource | None = None,
        publish_wait_s: float = 5.0,
        ca_file: str | None = None,
    ) -> None:
        self._host, self._port, tls, user, password = parse_broker_url(broker_url)
        self._on_report = on_report
        self._current_notices = current_notices
        self._publish_wait_s = publish_wait_s
        self._connected = threading.Event()
        self.counts = TickCounts("mqtt-bridge")
        self.refused = 0  # status messages refused: oversized, malformed, another device's
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        if user:
            self._client.username_pw_set(user, password)
        if tls:
            self._client.tls_set(ca_certs=ca_file)  # None: the system's CAs
        self._client.enable_logger(log)
        # a bug in a handler is logged by paho and must not end the network thread
        self._client.suppress_exceptions = True
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background; wait up to `wait_s` for the first connection."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self._connected.wait(wait_s) if wait_s > 0 else self.connected

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def health(self) -> WorkerHealth:
        thread = getattr(self._client, "_thread", None)  # paho's network thread (loop_start)
        alive = isinstance(thread, threading.Thread) and thread.is_alive()
        return self.counts.view(alive=alive, refused=self.refused)

    # ------------------------------------------------------------------ publishing

    def publish_notice(self, notice: AvailabilityNotice) -> None:
        """Retained, QoS 1: a device that connects later still hears the latest notice.

        Returns once the broker acknowledged it (or after `publish_wait_s`); while the broker
        is away paho keeps the message and sends it after reconnecting."""
        self._publish(channel_topic(notice.channel, notice.model), notice.to_json(), retain=True)

    def publish_command(self, device_id: str, cmd: Command) -> None:
        self._publish(device_cmd_topic(device_id), cmd.to_json(), retain=False)

    def publish_announcement(self, channel: str, payload: bytes) -> None:
        """The weekly train's announcement of the coming build, retained for testers."""
        self._publish(announce_topic(channel), payload, retain=True)

    def _publish(self, topic: str, payload: bytes, *, retain: bool, wait: bool = True) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            log.info("broker not connected: %s queued until paho reconnects", topic)
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
        elif wait:  # never in paho's own thread: it is the one that reads the PUBACK
            info.wait_for_publish(self._publish_wait_s)
            if not info.is_published():
                log.warning("broker did not acknowledge %s within %ss", topic, self._publish_wait_s)

    # ------------------------------------------------------------------ paho callbacks

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        client.subscribe(STATUS_WILDCARD, qos=1)
        self._connected.set()
        if self._current_notices is not None:
            for notice in self._current_notices():  # retained state may have been lost
                topic = channel_topic(notice.channel, notice.model)
                self._publish(topic, notice.to_json(), retain=True, wait=False)

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connected.clear()
        if reason_code.is_failure:
            log.warning("lost the broker (%s); paho reconnects with backoff", reason_code)

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.take_status(msg.topic, bytes(msg.payload))
        except Exception as exc:  # paho's thread outlives any message: logged, counted, on /health
            log.exception("a message on %s broke its handler", msg.topic)
            self.counts.failed(exc)
        finally:
            self.counts.ran(utc_now())

    def take_status(self, topic: str, payload: bytes) -> None:
        """Ingest one status message, or refuse (log, count) it; nothing half-stored."""
        try:
            report = status_report(topic, payload)
        except ProtocolError as exc:
            self.refused += 1
            process_metrics().report_refused("mqtt", "malformed")
            log.warning("dropped a message on %s: %s", topic[:200], exc)
            return
        try:
            self._on_report(report.device_id, report)
        except ServiceError as exc:
            self.refused += 1
            process_metrics().report_refused("mqtt", type(exc).__name__)
            log.warning("dropped report %s/%d: %s", report.device_id, report.seq, exc)


def status_report(topic: str, payload: bytes) -> StatusReport:
    """The report a status message carries, if it is one: small, well-formed, version 1, and
    from the device its topic names (the broker's ACL let only that device publish there)."""
    device_id = device_id_from_status_topic(topic)
    if len(payload) > MAX_STATUS_BYTES:
        raise ProtocolError(f"{len(payload)} bytes, at most {MAX_STATUS_BYTES}")
    report = StatusReport.from_json(payload)
    if report.device_id != device_id:
        raise ProtocolError(f"it names device {report.device_id!r}, not {device_id!r}")
    return report
