"""The generated broker configuration against a real mosquitto: TLS, logins and the wire
contract's ACL (a device publishes only its own status, reads only its own commands and its
channel's notice). With CI=true a missing mosquitto binary fails instead of skipping."""

from __future__ import annotations

import base64
import dataclasses
import getpass
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI

from lab.net import free_port
from lab.processes import mosquitto, mosquitto_binary
from server.mosquitto import (
    BrokerConfigError,
    BrokerConfigPaths,
    BrokerDevice,
    acl_file,
    hash_password,
    make_ca,
    mosquitto_conf,
    password_file,
    verify_password,
    write_broker_config,
)
from server.testing import MqttPeer, only_the_allowed_arrives
from wire import (
    STATUS_WILDCARD,
    ProtocolError,
    channel_topic,
    device_cmd_topic,
    device_status_topic,
)

WAIT_S = 15.0
SERVER_USER = "ota-server"
needs_mosquitto = pytest.mark.mosquitto


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing part is a failure, not a skip)")
    pytest.skip(reason)


def _tool(name: str, usual_place: str) -> str | None:
    return shutil.which(name) or (usual_place if Path(usual_place).exists() else None)


def _device(name: str, channel: str, suffix: str) -> BrokerDevice:
    return BrokerDevice(f"{name}-{suffix}", f"{channel}-{suffix}", "m1", uuid.uuid4().hex)


@dataclass
class Broker:
    port: int
    plain_port: int
    server_port: int
    paths: BrokerConfigPaths
    a: BrokerDevice
    b: BrokerDevice
    server_password: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    binary = mosquitto_binary()
    if binary is None:
        _missing("mosquitto binary not found")
        return
    out = tmp_path_factory.mktemp("broker")
    suffix = uuid.uuid4().hex[:8]
    a, b = _device("dev-a", "stable", suffix), _device("dev-b", "beta", suffix)
    port, plain_port, server_port = free_port(), free_port(), free_port()
    server_password = uuid.uuid4().hex
    # B logs in with a stored hash, as a registry keeps it; made by mosquitto_passwd if installed
    b_stored = dataclasses.replace(b, password="", password_hash=_stored_hash(b, out))
    paths = write_broker_config(
        out / "conf",
        [a, b_stored],
        port=port,
        server_password=server_password,
        plain_port=plain_port,
        server_port=server_port,
        # as root, mosquitto would drop to a user that cannot read the 0600 files
        run_as_user=getpass.getuser(),
    )
    with mosquitto(binary, paths.conf, port, out / "mosquitto.log") as proc:
        yield Broker(port, plain_port, server_port, paths, a, b, server_password, proc)


def _stored_hash(device: BrokerDevice, scratch: Path) -> str:
    tool = _tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    if tool is None:
        return hash_password(device.password)
    target = scratch / "tool-passwd"
    subprocess.run([tool, "-b", "-c", str(target), device.device_id, device.password], check=True)
    user, encoded = target.read_text().strip().split(":", 1)
    assert user == device.device_id
    return encoded


Peer = MqttPeer
PeerFactory = Callable[..., Peer]


@pytest.fixture
def peer(broker: Broker) -> Iterator[PeerFactory]:
    """`peer(username, password)`: a TLS client trusting the generated CA; closed afterwards."""
    made: list[Peer] = []

    def make(
        username: str | None,
        password: str | None,
        *,
        ca: Path | None = None,
        client_id: str = "",
        plain: bool = False,
    ) -> Peer:
        tls_ca = None if plain else ca or broker.paths.ca_cert
        made.append(Peer(username, password, tls_ca, client_id))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _connected(make: PeerFactory, broker: Broker, username: str, password: str) -> Peer:
    p = make(username, password)
    reason = p.connect(broker.port)
    assert not reason.is_failure, reason
    return p


def _server(make: PeerFactory, broker: Broker) -> Peer:
    return _connected(make, broker, SERVER_USER, broker.server_password)


def _as(make: PeerFactory, broker: Broker, device: BrokerDevice) -> Peer:
    return _connected(make, broker, device.device_id, device.password)


# --------------------------------------------------------------------------- the wire contract


@needs_mosquitto
def test_device_status_reaches_the_server(broker: Broker, peer: PeerFactory) -> None:
    server = _server(peer, broker)
    assert not server.subscribe(STATUS_WILDCARD)[0].is_failure
    payload = uuid.uuid4().bytes
    _as(peer, broker, broker.a).publish(device_status_topic(broker.a.device_id), payload)
    assert server.next_message() == (device_status_topic(broker.a.device_id), payload)


@needs_mosquitto
def test_device_cannot_publish_as_another_device(broker: Broker, peer: PeerFactory) -> None:
    server = _server(peer, broker)
    server.subscribe(STATUS_WILDCARD)
    a = _as(peer, broker, broker.a)
    own, other = device_status_topic(broker.a.device_id), device_status_topic(broker.b.device_id)
    only_the_allowed_arrives(a, server, (other,), own)


@needs_mosquitto
def test_device_cannot_publish_notices_or_commands(broker: Broker, peer: PeerFactory) -> None:
    server = _server(peer, broker)
    notice = channel_topic(broker.a.channel, broker.a.model)
    cmd = device_cmd_topic(broker.a.device_id)
    server.subscribe(notice, cmd, STATUS_WILDCARD)
    a = _as(peer, broker, broker.a)
    only_the_allowed_arrives(a, server, (notice, cmd), device_status_topic(broker.a.device_id))


@needs_mosquitto
def test_device_reads_its_own_notice_only(broker: Broker, peer: PeerFactory) -> None:
    server = _server(peer, broker)
    own = channel_topic(broker.a.channel, broker.a.model)
    other = channel_topic(broker.b.channel, broker.b.model)
    server.publish(other, b"not for a", retain=True)
    server.publish(own, b"for a", retain=True)
    a = _as(peer, broker, broker.a)
    a.subscribe(other, own)
    assert a.next_message() == (own, b"for a")
    a.assert_quiet()


@needs_mosquitto
def test_device_reads_its_own_commands_only(broker: Broker, peer: PeerFactory) -> None:
    server = _server(peer, broker)
    a = _as(peer, broker, broker.a)
    own, other = device_cmd_topic(broker.a.device_id), device_cmd_topic(broker.b.device_id)
    a.subscribe(other, own)
    only_the_allowed_arrives(server, a, (other,), own)


@needs_mosquitto
def test_wildcard_subscription_sees_only_what_the_device_may_read(
    broker: Broker, peer: PeerFactory
) -> None:
    server = _server(peer, broker)
    server.publish(channel_topic(broker.b.channel, broker.b.model), b"b notice", retain=True)
    server.publish(channel_topic(broker.a.channel, broker.a.model), b"a notice", retain=True)
    a = _as(peer, broker, broker.a)
    a.subscribe("ota/v1/#")
    assert a.next_message() == (channel_topic(broker.a.channel, broker.a.model), b"a notice")
    others = (device_status_topic(broker.b.device_id), device_cmd_topic(broker.b.device_id))
    only_the_allowed_arrives(server, a, others, device_cmd_topic(broker.a.device_id))


@needs_mosquitto
def test_a_device_cannot_take_over_another_devices_session(
    broker: Broker, peer: PeerFactory
) -> None:
    server = _server(peer, broker)
    b_agent_id = f"ota-agent-{broker.b.device_id}"  # what B's agent presents (agent/doorbell.py)
    b = peer(broker.b.device_id, broker.b.password, client_id=b_agent_id)
    assert not b.connect(broker.port).is_failure
    b.subscribe(device_cmd_topic(broker.b.device_id))
    intruder = peer(broker.a.device_id, broker.a.password, client_id=b_agent_id)
    assert not intruder.connect(broker.port).is_failure
    server.publish(device_cmd_topic(broker.b.device_id), b"still b's")
    assert b.next_message() == (device_cmd_topic(broker.b.device_id), b"still b's")
    assert b.disconnected.empty()


# --------------------------------------------------------------------------- logins and TLS


@needs_mosquitto
@pytest.mark.parametrize("who", ["wrong password", "unknown user", "anonymous"])
def test_bad_logins_are_refused(broker: Broker, peer: PeerFactory, who: str) -> None:
    username, password = {
        "wrong password": (broker.a.device_id, broker.b.password),
        "unknown user": (f"dev-z-{uuid.uuid4().hex[:8]}", broker.a.password),
        "anonymous": (None, None),
    }[who]
    assert peer(username, password).connect(broker.port).is_failure


@needs_mosquitto
def test_plain_listener_still_requires_a_login(broker: Broker, peer: PeerFactory) -> None:
    anonymous = Peer(None, None, ca=None)
    server = Peer(SERVER_USER, broker.server_password, ca=None)
    try:
        assert anonymous.connect(broker.plain_port).is_failure
        assert not server.connect(broker.plain_port).is_failure
    finally:
        anonymous.close()
        server.close()


@needs_mosquitto
def test_server_processes_share_the_login_on_their_own_listener(
    broker: Broker, peer: PeerFactory
) -> None:
    """Two workers (or replicas) log in as the server with client ids of their own and both
    stay connected; on a device listener the second would take the first one's session."""
    workers = [
        peer(SERVER_USER, broker.server_password, client_id=f"ota-server-{n}", plain=True)
        for n in (1, 2)
    ]
    for worker in workers:
        assert not worker.connect(broker.server_port).is_failure
        worker.subscribe(STATUS_WILDCARD)
    a = _as(peer, broker, broker.a)
    a.publish(device_status_topic(broker.a.device_id), b"heard by both")
    for worker in workers:
        assert worker.next_message() == (device_status_topic(broker.a.device_id), b"heard by both")
        assert worker.disconnected.empty()


@needs_mosquitto
def test_the_server_listener_admits_the_servers_login_only(
    broker: Broker, peer: PeerFactory
) -> None:
    for device in (broker.a, broker.b):  # one from a plaintext password, one from a hash
        refused = peer(device.device_id, device.password, plain=True)
        assert refused.connect(broker.server_port).is_failure
        assert not peer(device.device_id, device.password).connect(broker.port).is_failure
    assert peer(None, None, plain=True).connect(broker.server_port).is_failure


@needs_mosquitto
def test_on_a_device_listener_the_server_login_keeps_one_session(
    broker: Broker, peer: PeerFactory
) -> None:
    """Why the server has a listener of its own: the client-id rule is per listener."""
    first = peer(SERVER_USER, broker.server_password, client_id="ota-server-1")
    assert not first.connect(broker.port).is_failure
    second = peer(SERVER_USER, broker.server_password, client_id="ota-server-2")
    assert not second.connect(broker.port).is_failure
    first.disconnected.get(timeout=WAIT_S)  # taken over: both were `ota-server` to mosquitto


@needs_mosquitto
def test_plain_mqtt_to_the_tls_port_fails(broker: Broker) -> None:
    plain = Peer(SERVER_USER, broker.server_password, ca=None)
    try:
        plain.client.connect("127.0.0.1", broker.port, keepalive=10)
        plain.client.loop_start()
        plain.disconnected.get(timeout=WAIT_S)  # the broker hangs up on a non-TLS hello
        assert plain.connacks.empty()
    finally:
        plain.close()


def _tls_handshake(port: int, cafile: Path, server_hostname: str) -> None:
    """What paho's tls_set(ca_certs=...) does, with sockets we close ourselves (paho leaks
    its socket when the handshake fails)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname),
    ):
        pass


@needs_mosquitto
@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_the_broker_certificate_verifies_for_its_names(broker: Broker, name: str) -> None:
    _tls_handshake(broker.port, broker.paths.ca_cert, name)


@needs_mosquitto
def test_a_client_trusting_another_ca_refuses_the_broker(broker: Broker, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(make_ca("someone else's CA")[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(broker.port, other_ca, "localhost")


@needs_mosquitto
def test_the_broker_certificate_does_not_cover_other_names(broker: Broker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(broker.port, broker.paths.ca_cert, "broker.example.org")


@needs_mosquitto
def test_regenerating_keeps_the_ca_and_a_reload_admits_new_devices(
    broker: Broker, peer: PeerFactory
) -> None:
    ca_before = broker.paths.ca_cert.read_bytes()
    c = _device("dev-c", "stable", uuid.uuid4().hex[:8])
    write_broker_config(
        broker.paths.conf.parent,
        [broker.a, broker.b, c],
        port=broker.port,
        server_password=broker.server_password,
        plain_port=broker.plain_port,
        server_port=broker.server_port,
        run_as_user=getpass.getuser(),
    )
    assert broker.paths.ca_cert.read_bytes() == ca_before
    broker.proc.send_signal(signal.SIGHUP)  # mosquitto rereads passwd and acl
    deadline = time.monotonic() + WAIT_S
    while peer(c.device_id, c.password).connect(broker.port).is_failure:
        assert time.monotonic() < deadline, "the new device was never admitted"
        time.sleep(0.1)
    _as(peer, broker, broker.a)  # the old logins still work


# --------------------------------------------------------------------------- pure parts


def test_hash_password_is_pbkdf2_sha512_in_mosquittos_format() -> None:
    salt = bytes(range(12))
    encoded = hash_password("s3cret", iterations=101, salt=salt)
    _, kind, iterations, salt_b64, hash_b64 = encoded.split("$")
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101, 64)
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(hash_b64) == expected
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret!", encoded)
    assert len(base64.b64decode(hash_password("x").split("$")[3])) == 12


def test_mosquitto_passwd_hashes_verify_the_same_way(tmp_path: Path) -> None:
    tool = _tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed: checked against PBKDF2 above instead")
    target = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(target), "alice", "wonder land"], check=True)
    user, encoded = target.read_text().strip().split(":", 1)
    assert user == "alice"
    assert encoded.startswith("$7$")
    assert verify_password("wonder land", encoded)
    assert not verify_password("wonderland", encoded)


def test_acl_grants_exactly_the_wire_contract() -> None:
    a = BrokerDevice("dev-a", "stable", "pi4", "pw")
    assert acl_file([a], "srv").splitlines()[3:] == [
        "pattern write ota/v1/device/%u/status",
        "pattern read ota/v1/device/%u/cmd",
        "",
        "user srv",
        "topic readwrite ota/v1/#",
        "",
        "user dev-a",
        "topic read ota/v1/channel/stable/pi4",
    ]


@pytest.mark.parametrize(
    "devices",
    [
        [BrokerDevice("dev a", "stable", "m1", "pw")],
        [BrokerDevice("dev:a", "stable", "m1", "pw")],
        [BrokerDevice("dev-a", "st+able", "m1", "pw")],
        [BrokerDevice("dev-a", "stable", "m#1", "pw")],
        [BrokerDevice("%u", "stable", "m1", "pw")],
        [BrokerDevice("ota-server", "stable", "m1", "pw")],
        [BrokerDevice("dev-a", "stable", "m1", "pw"), BrokerDevice("dev-a", "beta", "m1", "pw")],
        [BrokerDevice("dev-a", "stable", "m1", "")],
        [BrokerDevice("dev-a", "stable", "m1", "", password_hash="$6$101$abc$def")],
        [BrokerDevice("dev-a", "stable", "m1", "pw", password_hash="$7$101$!!$def")],
        [BrokerDevice("dev-a", "stable", "m1", "pw", password_hash=hash_password("pw")[:-8])],
        [BrokerDevice("x" * 200, "stable", "m1", "pw")],
    ],
)
def test_unsafe_device_lists_are_refused(devices: list[BrokerDevice]) -> None:
    with pytest.raises((BrokerConfigError, ProtocolError)):
        password_file(devices, "ota-server", "pw")


def test_a_refused_device_list_writes_nothing(tmp_path: Path) -> None:
    bad = [BrokerDevice("dev a", "stable", "m1", "pw")]
    with pytest.raises(BrokerConfigError):
        write_broker_config(tmp_path / "conf", bad, server_password="pw")
    assert not (tmp_path / "conf").exists()


def test_written_files_keys_private_and_ca_kept_unless_rotated(tmp_path: Path) -> None:
    devices = [BrokerDevice("dev-a", "stable", "m1", "pw")]
    paths = write_broker_config(tmp_path, devices, server_password="pw")
    private = {paths.ca_key, paths.server_key, paths.password_file}
    for path in (paths.ca_cert, paths.server_cert, paths.acl_file, paths.conf, *private):
        assert os.stat(path).st_mode & 0o777 == (0o600 if path in private else 0o644), path
    ca = paths.ca_cert.read_bytes()
    assert write_broker_config(tmp_path, [], server_password="pw").ca_cert.read_bytes() == ca
    rotated = write_broker_config(tmp_path, [], server_password="pw", rotate_ca=True)
    assert rotated.ca_cert.read_bytes() != ca
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _conf(**changed: Any) -> str:
    files = {"cafile": "ca.crt", "certfile": "s.crt", "keyfile": "s.key"}
    return mosquitto_conf(
        **{"port": 8883, **files, "password_file": "passwd", "acl_file": "acl", **changed}
    )


def test_conf_refuses_values_that_would_inject_lines() -> None:
    with pytest.raises(BrokerConfigError):
        _conf(cafile="ca.crt\nallow_anonymous true")


@pytest.mark.parametrize(
    ("bind", "tls"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("10.0.0.5", True)],
)
def test_the_server_listener_speaks_tls_beyond_loopback(bind: str, tls: bool) -> None:
    conf = _conf(server_port=1884, server_bind=bind, server_password_file="passwd-server")
    server_block = conf.split(f"listener 1884 {bind}\n", 1)[1]
    assert "password_file passwd-server" in server_block
    assert "use_username_as_clientid" not in server_block
    assert ("certfile s.crt" in server_block) is tls


def test_a_server_listener_without_its_own_password_file_is_refused() -> None:
    with pytest.raises(BrokerConfigError):
        _conf(server_port=1884)


@pytest.mark.parametrize("damage", ["key missing", "cert missing", "key of another CA"])
def test_half_a_ca_is_refused_not_replaced(tmp_path: Path, damage: str) -> None:
    paths = write_broker_config(tmp_path, [], server_password="pw")
    ca_before = paths.ca_cert.read_bytes() if damage != "cert missing" else b""
    if damage == "key of another CA":
        paths.ca_key.write_bytes(make_ca()[1])
    else:
        (paths.ca_key if damage == "key missing" else paths.ca_cert).unlink()
    with pytest.raises(BrokerConfigError):
        write_broker_config(tmp_path, [], server_password="pw")
    assert (paths.ca_cert.read_bytes() if paths.ca_cert.exists() else b"") == ca_before
    assert write_broker_config(tmp_path, [], server_password="pw", rotate_ca=True).ca_cert.exists()
