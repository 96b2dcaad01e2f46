"""Who may log in to the embedded broker and what each login may do: the same rules as the
generated Mosquitto configuration (`server.mosquitto`, docs/decisions/0009-server-broker-acl.md).

No anonymous clients. The server's user (its password given as a `$7$` hash) reads and writes
everything under the protocol prefix. A device logs in with its id and the broker secret it got
at enrollment (checked against the `$7$` hash in the server's database), under its own client
id; it publishes only its own status, and subscribes to and receives only its own commands and
its channel's notice. The rules are pure functions over a `Login`; `DeviceLogins` is the one
part that reads the database.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from sqlalchemy.orm import Session, sessionmaker

from server.models import Device
from server.mosquitto import BrokerConfigError, verify_password
from wire import (
    TOPIC_PREFIX,
    ProtocolError,
    channel_topic,
    check_device_id,
    device_client_id,
    device_cmd_topic,
    device_status_topic,
)

DEFAULT_SERVER_USER: Final = "ota-server"


@dataclass(frozen=True)
class BrokerAccess:
    """What the embedded broker needs to check logins: the server's database, and the
    server's own broker user with the `$7$` hash of its password."""

    db_url: str
    server_password_hash: str
    server_user: str = DEFAULT_SERVER_USER


@dataclass(frozen=True)
class Login:
    """An admitted client: the server, or a device with the notice topic of its channel."""

    user: str
    is_server: bool = False
    notice_topic: str = ""


# ---------------------------------------------------------------------- the rules


def may_publish(login: Login, topic: str) -> bool:
    if login.is_server:
        return _under_prefix(topic)
    return topic == device_status_topic(login.user)


def may_subscribe(login: Login, topic_filter: str) -> bool:
    """A device subscribes to exactly its own topics, never a wildcard around them."""
    if login.is_server:
        return _under_prefix(topic_filter)
    return topic_filter in _readable(login)


def may_receive(login: Login, topic: str) -> bool:
    if login.is_server:
        return _under_prefix(topic)
    return topic in _readable(login)


def _readable(login: Login) -> frozenset[str]:
    return frozenset({device_cmd_topic(login.user), login.notice_topic} - {""})


def _under_prefix(topic: str) -> bool:
    return topic.startswith(f"{TOPIC_PREFIX}/")


def client_id_allowed(login: Login, client_id: str) -> bool:
    """A device connects under its own client id only (mosquitto forces the username as the
    client id), so it cannot take over another device's session."""
    return login.is_server or client_id in (login.user, device_client_id(login.user))


# ---------------------------------------------------------------------- checking a login


def server_login(access: BrokerAccess, user: str, password: str) -> Login | None:
    same_user = hmac.compare_digest(user.encode(), access.server_user.encode())
    if not same_user or not _password_matches(password, access.server_password_hash):
        return None
    return Login(user, is_server=True)


def _password_matches(password: str, password_hash: str) -> bool:
    try:
        return verify_password(password, password_hash)
    except BrokerConfigError:  # a row with a broken hash admits nobody
        return False


class DeviceLogins:
    """Device logins checked against the server's device registry."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def check(self, user: str, password: str) -> Login | None:
        """The device's login if `user` is an enrolled device id and `password` its current
        broker secret; None otherwise (a bad id, no device, no secret, a wrong one)."""
        try:
            check_device_id(user)
        except ProtocolError:
            return None
        with self._sessions() as session:
            device = session.get(Device, user)
            if device is None or not device.broker_password_hash:
                return None
            if not _password_matches(password, device.broker_password_hash):
                return None
            return Login(user, notice_topic=_notice_topic(device))


def _notice_topic(device: Device) -> str:
    try:
        return channel_topic(device.channel, device.model)
    except ProtocolError:  # a row the contract cannot name reads no notice
        return ""
