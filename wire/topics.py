"""MQTT topics. Every topic carries the protocol version segment (`ota/v1/...`)."""

from __future__ import annotations

from typing import Final

from wire.errors import ProtocolError

PROTOCOL_VERSION: Final = 1
TOPIC_PREFIX: Final = f"ota/v{PROTOCOL_VERSION}"


def channel_topic(channel: str, model: str) -> str:
    """Retained availability notice for every device of `model` on `channel`."""
    return f"{TOPIC_PREFIX}/channel/{_segment(channel)}/{_segment(model)}"


def device_cmd_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/device/{_segment(device_id)}/cmd"


def device_status_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/device/{_segment(device_id)}/status"


def announce_topic(channel: str) -> str:
    """Retained announcement of the coming build for the testers of `channel` (the train)."""
    return f"{TOPIC_PREFIX}/announce/{_segment(channel)}"


STATUS_WILDCARD: Final = f"{TOPIC_PREFIX}/device/+/status"


def device_id_from_status_topic(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{TOPIC_PREFIX}/device" or parts[4] != "status":
        raise ProtocolError(f"not a status topic: {topic!r}")
    return parts[3]


def _segment(value: str) -> str:
    if not value or any(c in value for c in "/+#\x00") or len(value) > 128:
        raise ProtocolError(f"invalid topic segment: {value!r}")
    return value
