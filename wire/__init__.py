"""The wire contract between devices, the server and the signing side.

Standard library only, imported by `agent`, `server` and `signing` alike and importing none of
them: topics, HTTP paths, versioned messages, the enums that go into reports, the signed fields
of a ROM target, version ordering and the rollout bucket. Changing anything here changes what
every deployed device understands.
"""

from wire.enums import CommandKind, FailureReason, UpdateState
from wire.errors import ProtocolError
from wire.identity import (
    DEVICE_ID_PATTERN,
    check_device_id,
    decode_b64,
    device_client_id,
    encode_b64,
    enroll_request,
    enroll_statement,
    token_statement,
)
from wire.messages import (
    TRUSTED_TIMESTAMP_HEADER,
    AvailabilityNotice,
    Command,
    CommandAck,
    PollAnswer,
    ReportsAck,
    StatusReport,
    TrustedTimestamp,
)
from wire.paths import (
    API_PREFIX,
    ENROLL_PATH,
    FEEDBACK_PATH,
    TUF_METADATA_PATH,
    TUF_TARGETS_PATH,
    broker_secret_path,
    challenge_path,
    command_ack_path,
    device_token_path,
    leave_preview_path,
    poll_path,
    redeem_path,
    reports_path,
    vote_path,
)
from wire.target import (
    AndroidPayload,
    DeltaCustom,
    TargetCustom,
    delta_target_name,
    is_rom_target,
    target_name,
)
from wire.topics import (
    PROTOCOL_VERSION,
    STATUS_WILDCARD,
    TOPIC_PREFIX,
    announce_topic,
    channel_topic,
    device_cmd_topic,
    device_id_from_status_topic,
    device_status_topic,
)

__all__ = [
    "API_PREFIX",
    "DEVICE_ID_PATTERN",
    "ENROLL_PATH",
    "FEEDBACK_PATH",
    "PROTOCOL_VERSION",
    "STATUS_WILDCARD",
    "TOPIC_PREFIX",
    "TRUSTED_TIMESTAMP_HEADER",
    "TUF_METADATA_PATH",
    "TUF_TARGETS_PATH",
    "AndroidPayload",
    "AvailabilityNotice",
    "Command",
    "CommandAck",
    "CommandKind",
    "DeltaCustom",
    "FailureReason",
    "PollAnswer",
    "ProtocolError",
    "ReportsAck",
    "StatusReport",
    "TargetCustom",
    "TrustedTimestamp",
    "UpdateState",
    "announce_topic",
    "broker_secret_path",
    "challenge_path",
    "channel_topic",
    "check_device_id",
    "command_ack_path",
    "decode_b64",
    "delta_target_name",
    "device_client_id",
    "device_cmd_topic",
    "device_id_from_status_topic",
    "device_status_topic",
    "device_token_path",
    "encode_b64",
    "enroll_request",
    "enroll_statement",
    "is_rom_target",
    "leave_preview_path",
    "poll_path",
    "redeem_path",
    "reports_path",
    "target_name",
    "token_statement",
    "vote_path",
]
