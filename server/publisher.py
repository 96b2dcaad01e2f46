"""What the services need from a broker: publish a notice, publish a command. The MQTT bridge
is one implementation; `NoPublisher` serves an HTTP-only server (devices poll)."""

from __future__ import annotations

from typing import Protocol

from wire import AvailabilityNotice, Command


class Publisher(Protocol):
    def publish_notice(self, notice: AvailabilityNotice) -> None: ...

    def publish_command(self, device_id: str, cmd: Command) -> None: ...

    def publish_announcement(self, channel: str, payload: bytes) -> None: ...


class NoPublisher:
    """No broker configured: devices learn everything from their HTTP poll."""

    def publish_notice(self, notice: AvailabilityNotice) -> None:
        return None

    def publish_command(self, device_id: str, cmd: Command) -> None:
        return None

    def publish_announcement(self, channel: str, payload: bytes) -> None:
        return None
