"""The server's one MQTT client: publishes notices and commands, hears device reports.

paho 2.x idioms: CallbackAPIVersion.VERSION2, its own network thread (loop_start), reconnect
with backoff, subscriptions made in on_connect so they survive reconnects, and a persistent
session under a fixed client id so the broker queues QoS 1 reports while the server restarts.
A report heard here goes through the same idempotent ingestion as one POSTed over HTTP.

Reports are stored in batches: paho's thread only queues each message; one storer thread
takes whatever has queued (up to `max_batch`), stores it in one transaction and only then
acknowledges every message of it to the broker (manual acks), so a report the broker saw
acknowledged is committed. A burst of ten thousand reports is a few dozen transactions.

Every message on a status topic is a tick of this worker: one that is oversized, malformed,
of an unknown version or names another device than its topic is refused and counted, and a
handler that raises anything is logged and counted; `health()` shows both on `GET /health`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.exc import SQLAlchemyError

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
MAX_BATCH: Final = 2000  # reports stored in one transaction, at most
STORE_ATTEMPTS: Final = 3  # a batch the database refuses this often is left to HTTP
RETRY_WAIT_S: Final = 1.0


@dataclass(frozen=True)
class Refusal:
    """A report the handler would not store, and why (logged and counted by the bridge)."""

    report: StatusReport
    error: ServiceError


# Stores a batch in one transaction and returns what it refused; raises when the database
# failed (nothing of the batch is stored then).
BatchHandler = Callable[[Sequence[StatusReport]], Sequence[Refusal]]
NoticeSource = Callable[[], Iterable[AvailabilityNotice]]


@dataclass(frozen=True)
class _Heard:
    topic: str
    payload: bytes
    mid: int
    qos: int


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
        on_reports: BatchHandler,
        *,
        client_id: str = "ota-server",
        current_notices: NoticeSource | None = None,
        publish_wait_s: float = 5.0,
        ca_file: str | None = None,
        max_batch: int = MAX_BATCH,
        share_group: str | None = None,
    ) -> None:
        self._host, self._port, tls, user, password = parse_broker_url(broker_url)
        self._on_reports = on_reports
        self._max_batch = max_batch
        self._heard: queue.Queue[_Heard | None] = queue.Queue()
        self._storer: threading.Thread | None = None
        self._current_notices = current_notices
        self._publish_wait_s = publish_wait_s
        self._connected = threading.Event()
        self.counts = TickCounts("mqtt-bridge")
        self.refused = 0  # status messages refused: oversized, malformed, another device's
        self.handled = 0  # reports handed to the storer and not refused (duplicates included)
        self._client_id = client_id
        # One of several workers (decision 0025): a shared subscription, and no session kept
        # for a worker's per-process id (a dead worker's session would hold its share).
        self._status_topic = f"$share/{share_group}/{STATUS_WILDCARD}" if share_group else None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=share_group is not None,
            manual_ack=True,
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
        self._storer = threading.Thread(target=self._store_forever, name="mqtt-storer", daemon=True)
        self._storer.start()
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self._connected.wait(wait_s) if wait_s > 0 else self.connected

    def stop(self) -> None:
        """Disconnect, then store (and acknowledge) what was heard before."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        if self._storer is not None:
            self._heard.put(None)
            self._storer.join(timeout=30)
            self._storer = None
        log.info("MQTT client %s handled %d reports", self._client_id, self.handled)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def health(self) -> WorkerHealth:
        thread = getattr(self._client, "_thread", None)  # paho's network thread (loop_start)
        alive = isinstance(thread, threading.Thread) and thread.is_alive()
        alive = alive and self._storer is not None and self._storer.is_alive()
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
        client.subscribe(self._status_topic or STATUS_WILDCARD, qos=1)
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
        """paho's thread only queues: storing is the storer thread's (acks follow commits)."""
        self._heard.put(_Heard(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _store_forever(self) -> None:
        while True:
            batch, stopping = self._next_batch()
            if batch:
                self.take_batch(batch)
            if stopping:
                return

    def _next_batch(self) -> tuple[list[_Heard], bool]:
        """What queued so far (waiting for the first), at most `max_batch`; True at stop."""
        first = self._heard.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._heard.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def take_batch(self, batch: Sequence[_Heard]) -> None:
        """Store a batch of status messages, then acknowledge all of them to the broker."""
        try:
            reports = [r for r in (self._parsed(h) for h in batch) if r is not None]
            if reports:
                self._store(reports)
        except Exception as exc:  # the storer outlives any batch: logged, counted, on /health
            log.exception("a batch of %d status messages broke its handler", len(batch))
            self.counts.failed(exc)
        finally:
            for heard in batch:
                if heard.qos > 0:
                    self._client.ack(heard.mid, heard.qos)
            self.counts.ran(utc_now())

    def _parsed(self, heard: _Heard) -> StatusReport | None:
        try:
            return status_report(heard.topic, heard.payload)
        except ProtocolError as exc:
            self.refused += 1
            process_metrics().report_refused("mqtt", "malformed")
            log.warning("dropped a message on %s: %s", heard.topic[:200], exc)
            return None

    def _store(self, reports: Sequence[StatusReport]) -> None:
        """One transaction for the batch; a database failure is retried a few times, then
        the batch is left to the devices' HTTP outboxes (they resend until acknowledged)."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                refusals = self._on_reports(reports)
                break
            except SQLAlchemyError:
                log.exception("could not store %d reports (attempt %d)", len(reports), attempt)
                if attempt == STORE_ATTEMPTS:
                    return
                time.sleep(RETRY_WAIT_S)
        self.handled += len(reports) - len(refusals)
        for refusal in refusals:
            self.refused += 1
            process_metrics().report_refused("mqtt", type(refusal.error).__name__)
            report = refusal.report
            log.warning("dropped report %s/%d: %s", report.device_id, report.seq, refusal.error)

    def take_status(self, topic: str, payload: bytes) -> None:
        """Ingest one status message now (a batch of one), or refuse (log, count) it."""
        self.take_batch([_Heard(topic, payload, 0, 0)])


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
