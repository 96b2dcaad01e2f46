"""Everything a Mosquitto 2.x needs to carry the wire contract safely: TLS, logins, ACLs.

Pure generators (`make_ca`, `make_server_cert`, `hash_password`, `password_file`, `acl_file`,
`mosquitto_conf`) return bytes or text; `write_broker_config` is the one writer. The ACL is
the wire contract of design.md: a device (username = device id) publishes only its own status
and reads only its own commands and its channel/model notice; the server user reads and
writes everything under the protocol prefix. Topic names come from `wire`, so the
ACL cannot drift from what the agent and the server use
(docs/decisions/0009-server-broker-acl.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from durable import atomic_write, ensure_dir
from wire import (
    TOPIC_PREFIX,
    ProtocolError,
    channel_topic,
    check_device_id,
    device_cmd_topic,
    device_status_topic,
)

PBKDF2_SHA512_ID = "7"  # mosquitto 2.x's `$7$` password hashes
SALT_BYTES = 12
HASH_BYTES = 64
DEFAULT_ITERATIONS = 101  # what mosquitto_passwd writes
SERVER_CERT_DAYS = 825
_FORBIDDEN_IN_NAMES = frozenset(":%/+#\x00")
_PUBLIC = 0o644  # certificates, the ACL and the config: mosquitto may run as another user


class BrokerConfigError(ValueError):
    """A device list or setting that would make a wrong or unsafe broker configuration."""


@dataclass(frozen=True)
class BrokerDevice:
    """One device's broker login: a plaintext password (in memory only) or, for a rewrite
    from the registry, the `$7$` hash made by `hash_password` when the device enrolled."""

    device_id: str
    channel: str
    model: str
    password: str = field(repr=False)
    password_hash: str = field(default="", repr=False)


@dataclass(frozen=True)
class BrokerConfigPaths:
    """Where `write_broker_config` put each file."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    password_file: Path
    server_password_file: Path  # the server's login only, for its own listener
    acl_file: Path
    conf: Path


# --------------------------------------------------------------------------- certificates


def make_ca(common_name: str = "Orange Friday broker CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _pem(builder.sign(key, hashes.SHA256())), _key_pem(key)


def make_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    hostnames: list[str],
    ips: list[str],
    days: int = SERVER_CERT_DAYS,
) -> tuple[bytes, bytes]:
    """The broker's TLS certificate for `hostnames` and `ips`, signed by the CA."""
    if not hostnames and not ips:
        raise BrokerConfigError("the server certificate needs at least one hostname or IP")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise BrokerConfigError("the CA key must be an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = hostnames[0] if hostnames else ips[0]
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .add_extension(_subject_alt_names(hostnames, ips), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    return _pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    if days <= 0:
        raise BrokerConfigError(f"a certificate must be valid for at least one day, not {days}")
    now = dt.datetime.now(dt.UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_alt_names(hostnames: Iterable[str], ips: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as exc:
        raise BrokerConfigError(str(exc)) from None
    return x509.SubjectAlternativeName(names)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------- passwords


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """mosquitto 2.x's `$7$<iterations>$<b64 salt>$<b64 hash>` (PBKDF2-HMAC-SHA512)."""
    if iterations < 1:
        raise BrokerConfigError("iterations must be at least 1")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _pbkdf2(password, salt, iterations)
    return f"${PBKDF2_SHA512_ID}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `encoded` (a `$7$` hash, as mosquitto_passwd writes it) is `password`'s."""
    iterations, salt, expected = _parse_hash(encoded)
    return hmac.compare_digest(_pbkdf2(password, salt, iterations), expected)


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != PBKDF2_SHA512_ID or not parts[2].isdigit():
        raise BrokerConfigError("not a mosquitto $7$ password hash")
    try:
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except ValueError:
        raise BrokerConfigError("a $7$ password hash with bad base64") from None
    if len(digest) != HASH_BYTES or not salt or int(parts[2]) < 1:
        raise BrokerConfigError("a $7$ password hash of the wrong shape")
    return int(parts[2]), salt, digest


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def password_file(devices: Sequence[BrokerDevice], server_user: str, server_password: str) -> str:
    """mosquitto's `password_file`: the server user first, then one line per device."""
    _check_devices(devices, server_user)
    lines = [f"{server_user}:{_login_hash(server_user, server_password, '')}\n"]
    for d in devices:
        lines.append(f"{d.device_id}:{_login_hash(d.device_id, d.password, d.password_hash)}\n")
    return "".join(lines)


def _login_hash(user: str, password: str, password_hash: str) -> str:
    if password_hash:
        _parse_hash(password_hash)
        return password_hash
    if not password:
        raise BrokerConfigError(f"user {user!r} has neither a password nor a password hash")
    return hash_password(password)


# --------------------------------------------------------------------------- ACL


def acl_file(devices: Sequence[BrokerDevice], server_user: str) -> str:
    """mosquitto's `acl_file` for the wire contract; anything not granted here is denied."""
    _check_devices(devices, server_user)
    lines = [
        "# Generated by server.mosquitto from the device registry: regenerate, do not edit.",
        "# Every login (username = device id) publishes only its own status and reads only",
        "# its own commands; each device's channel/model notice is granted under its user.",
        f"pattern write {device_status_topic('%u')}",
        f"pattern read {device_cmd_topic('%u')}",
        "",
        f"user {server_user}",
        f"topic readwrite {TOPIC_PREFIX}/#",
    ]
    for device in devices:
        lines += ["", f"user {device.device_id}", f"topic read {_notice_topic(device)}"]
    return "\n".join(lines) + "\n"


def _notice_topic(device: BrokerDevice) -> str:
    return channel_topic(device.channel, device.model)


def _check_devices(devices: Sequence[BrokerDevice], server_user: str) -> None:
    """Names that are safe in both files and in topics, and one login per name."""
    _check_name("server user", server_user)
    seen = {server_user}
    for device in devices:
        _check_device(device)
        if device.device_id in seen:
            raise BrokerConfigError(f"login {device.device_id!r} appears twice")
        seen.add(device.device_id)


def _check_device(device: BrokerDevice) -> None:
    _check_name("device id", device.device_id)
    _check_name("channel", device.channel)
    _check_name("model", device.model)
    # the contract's own checks (the device id rule, lengths, reserved characters)
    try:
        check_device_id(device.device_id)
    except ProtocolError as exc:
        raise BrokerConfigError(str(exc)) from None
    device_status_topic(device.device_id)
    _notice_topic(device)
    if device.password_hash:
        _parse_hash(device.password_hash)
    elif not device.password:
        raise BrokerConfigError(f"device {device.device_id!r} has no password nor password hash")


def usable_devices(
    devices: Sequence[BrokerDevice], server_user: str
) -> tuple[list[BrokerDevice], dict[str, str]]:
    """The devices that make sound logins, and why each other one does not (by device id).

    For a configuration made from the registry: one bad row (an id from before the device
    id rule, a damaged hash, the server's own name) is left out and named, and never stops
    the configuration of the rest of the fleet."""
    usable: list[BrokerDevice] = []
    refused: dict[str, str] = {}
    seen = {server_user}
    for device in devices:
        try:
            _check_device(device)
        except (BrokerConfigError, ProtocolError) as exc:
            refused[device.device_id] = str(exc)
            continue
        if device.device_id in seen:
            refused[device.device_id] = "the login is taken (the server's, or twice)"
            continue
        seen.add(device.device_id)
        usable.append(device)
    return usable, refused


def _check_name(what: str, value: str) -> None:
    bad = not value or any(c.isspace() or not c.isprintable() for c in value)
    if bad or _FORBIDDEN_IN_NAMES.intersection(value):
        raise BrokerConfigError(f"{what} {value!r} is not usable as a broker name")


# --------------------------------------------------------------------------- mosquitto.conf


def mosquitto_conf(
    *,
    port: int,
    cafile: Path | str,
    certfile: Path | str,
    keyfile: Path | str,
    password_file: Path | str,
    acl_file: Path | str,
    bind: str = "127.0.0.1",
    plain_port: int | None = None,
    server_port: int | None = None,
    server_bind: str = "127.0.0.1",
    server_password_file: Path | str | None = None,
    persistence_location: Path | str | None = None,
    run_as_user: str | None = None,
) -> str:
    """A mosquitto 2.x config: a TLS listener for devices, logins and the ACL on every listener.

    `plain_port` adds an unencrypted device listener on the same `bind` address (a lab on one
    host); it still requires a login and applies the same ACL. On device listeners
    `use_username_as_clientid` stops one device from taking over another's session by
    choosing that device's client id.

    `server_port` adds the server processes' own listener on `server_bind`: its password file
    (`server_password_file`) holds only the server's login, so no device logs in there, and
    it has no client-id rule, so several server processes (`--workers`, replicas) share the
    login with client ids of their own (decision 0026). Bound beyond loopback it speaks TLS.
    """
    tls = [
        f"cafile {_conf_value(cafile)}",
        f"certfile {_conf_value(certfile)}",
        f"keyfile {_conf_value(keyfile)}",
        "require_certificate false",
        "tls_version tlsv1.2",
    ]
    lines = [
        "# Generated by server.mosquitto: regenerate, do not edit.",
        # logins per listener: the server's listener admits the server's login only
        "per_listener_settings true",
        *_persistence_lines(persistence_location),
        *([f"user {_conf_value(run_as_user)}"] if run_as_user else []),
        *_queue_lines(),
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "",
        *_device_listener_lines(port, bind, password_file, acl_file),
        *tls,
    ]
    if plain_port is not None:
        lines += ["", *_device_listener_lines(plain_port, bind, password_file, acl_file)]
    if server_port is not None:
        if server_password_file is None:
            raise BrokerConfigError("the server listener needs its own password file")
        lines += [
            "",
            *_listener_lines(server_port, server_bind),
            *_login_lines(server_password_file, acl_file),
            *([] if is_loopback(server_bind) else tls),
        ]
    return "\n".join(lines) + "\n"


def is_loopback(address: str) -> bool:
    """Whether a listener bound here is reachable from this host only (it then skips TLS)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# The server is one client that hears every device's reports: with mosquitto's defaults (1,000
# queued and 20 in flight per client) a fleet's burst of reports is dropped at the broker
# ("outgoing messages are being dropped"). The server acknowledges a batch after storing it,
# so it needs many in flight; the queue is bounded by bytes rather than by count.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_QUEUED_BYTES = 512 * 1024 * 1024
MAX_INFLIGHT_MESSAGES = 2000


def _queue_lines() -> list[str]:
    return [
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
    ]


def _device_listener_lines(
    port: int, bind: str, password_file: Path | str, acl_file: Path | str
) -> list[str]:
    return [
        *_listener_lines(port, bind),
        "use_username_as_clientid true",  # no device takes over another's session
        *_login_lines(password_file, acl_file),
    ]


def _login_lines(password_file: Path | str, acl_file: Path | str) -> list[str]:
    return [
        "allow_anonymous false",
        f"password_file {_conf_value(password_file)}",
        f"acl_file {_conf_value(acl_file)}",
    ]


def _listener_lines(port: int, bind: str) -> list[str]:
    # a listener option above the first `listener` line would open a default one on 1883
    return [
        f"listener {port} {_conf_value(bind)}",
        "protocol mqtt",
    ]


def _persistence_lines(location: Path | str | None) -> list[str]:
    if location is None:
        return ["persistence false"]
    return ["persistence true", f"persistence_location {_conf_value(str(location).rstrip('/'))}/"]


def _conf_value(value: Path | str) -> str:
    text = str(value)
    if not text or "\n" in text or "\r" in text or "\x00" in text:
        raise BrokerConfigError(f"{text!r} cannot go into mosquitto.conf")
    return text


# --------------------------------------------------------------------------- writer


def write_broker_config(
    out_dir: Path,
    devices: Sequence[BrokerDevice],
    *,
    port: int = 8883,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    server_user: str = "ota-server",
    server_password: str,
    bind: str = "127.0.0.1",
    plain_port: int | None = None,
    server_port: int | None = None,
    server_bind: str = "127.0.0.1",
    run_as_user: str | None = None,
    persistence_location: Path | None = None,
    rotate_ca: bool = False,
) -> BrokerConfigPaths:
    """Write the CA, the server certificate, the logins, the ACL and mosquitto.conf.

    Every file is replaced atomically; keys and password hashes are readable by the owner
    only. An existing CA is kept (devices keep trusting the broker) unless `rotate_ca`; the
    server certificate is reissued every time. Everything is generated before the first
    file is written, so a bad device list changes nothing.
    """
    paths = _paths(out_dir.resolve())
    passwd = password_file(devices, server_user, server_password)
    server_passwd = password_file([], server_user, server_password)
    acl = acl_file(devices, server_user)
    ca_cert, ca_key = _load_or_make_ca(paths, rotate=rotate_ca)
    cert, key = make_server_cert(ca_cert, ca_key, list(hostnames), list(ips))
    conf = mosquitto_conf(
        port=port,
        cafile=paths.ca_cert,
        certfile=paths.server_cert,
        keyfile=paths.server_key,
        password_file=paths.password_file,
        acl_file=paths.acl_file,
        bind=bind,
        plain_port=plain_port,
        server_port=server_port,
        server_bind=server_bind,
        server_password_file=paths.server_password_file,
        persistence_location=persistence_location,
        run_as_user=run_as_user,
    )
    ensure_dir(paths.conf.parent)
    atomic_write(paths.ca_key, ca_key)  # private (0600) unless told
    atomic_write(paths.ca_cert, ca_cert, mode=_PUBLIC)
    atomic_write(paths.server_key, key)
    atomic_write(paths.server_cert, cert, mode=_PUBLIC)
    atomic_write(paths.password_file, passwd.encode())
    atomic_write(paths.server_password_file, server_passwd.encode())
    atomic_write(paths.acl_file, acl.encode(), mode=_PUBLIC)
    atomic_write(paths.conf, conf.encode(), mode=_PUBLIC)
    return paths


def _paths(out_dir: Path) -> BrokerConfigPaths:
    return BrokerConfigPaths(
        ca_cert=out_dir / "ca.crt",
        ca_key=out_dir / "ca.key",
        server_cert=out_dir / "server.crt",
        server_key=out_dir / "server.key",
        password_file=out_dir / "passwd",
        server_password_file=out_dir / "passwd-server",
        acl_file=out_dir / "acl",
        conf=out_dir / "mosquitto.conf",
    )


def _load_or_make_ca(paths: BrokerConfigPaths, *, rotate: bool) -> tuple[bytes, bytes]:
    """The CA already there (devices trust it), a new one when there is none or on rotation.

    Half a CA (a certificate without its key, or the other way round) is refused rather than
    silently replaced: a new CA would lock out every device that trusts the old one.
    """
    present = [p.exists() for p in (paths.ca_cert, paths.ca_key)]
    if rotate or not any(present):
        return make_ca()
    if not all(present):
        raise BrokerConfigError(
            f"{paths.ca_cert.parent} holds only half a CA (ca.crt and ca.key go together); "
            "restore the missing file or rotate the CA"
        )
    cert_pem, key_pem = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    _check_key_matches(cert_pem, key_pem)
    return cert_pem, key_pem


def _check_key_matches(cert_pem: bytes, key_pem: bytes) -> None:
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert_public = x509.load_pem_x509_certificate(cert_pem).public_key()
    if cert_public != key.public_key():
        raise BrokerConfigError("ca.key does not belong to ca.crt")
