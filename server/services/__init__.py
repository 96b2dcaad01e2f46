"""Who gets what when: service functions over a SQLAlchemy Session, callable from the HTTP
routes, the MQTT bridge, the tests and the demo alike. Each one commits its own unit of work."""

from server.services.commands import poll_for_device, queue_command, take_pending_commands
from server.services.devices import (
    Enrollment,
    authenticate_device,
    enroll_device,
    hash_credential,
    list_devices,
)
from server.services.releases import (
    RegisteredRelease,
    current_notice,
    current_notices,
    list_releases,
    register_release,
    update_rollout,
)
from server.services.reports import ingest_reports, list_reports, parse_reports

__all__ = [
    "Enrollment",
    "RegisteredRelease",
    "authenticate_device",
    "current_notice",
    "current_notices",
    "enroll_device",
    "hash_credential",
    "ingest_reports",
    "list_devices",
    "list_releases",
    "list_reports",
    "parse_reports",
    "poll_for_device",
    "queue_command",
    "register_release",
    "take_pending_commands",
    "update_rollout",
]
