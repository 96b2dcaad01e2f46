"""HTTP paths of the server's device and tester API, and of the TUF repository."""

from __future__ import annotations

from typing import Final

from wire.topics import PROTOCOL_VERSION

API_PREFIX: Final = f"/api/v{PROTOCOL_VERSION}"
ENROLL_PATH: Final = f"{API_PREFIX}/enroll"
TUF_METADATA_PATH: Final = "/tuf/metadata/"
TUF_TARGETS_PATH: Final = "/tuf/targets/"


def poll_path(device_id: str) -> str:
    """GET: what should this device run (the notice for its channel/model, pending commands)."""
    return f"{API_PREFIX}/devices/{device_id}/poll"


def reports_path(device_id: str) -> str:
    """POST a JSON list of StatusReport; the answer acknowledges sequence numbers."""
    return f"{API_PREFIX}/devices/{device_id}/reports"


def command_ack_path(device_id: str) -> str:
    """POST a CommandAck: the device has stored or handled these commands. Until then every
    poll hands them out again, so a lost poll answer loses no command."""
    return f"{API_PREFIX}/devices/{device_id}/commands/ack"


def redeem_path(device_id: str) -> str:
    """POST {"code"}: spend an F-code; the device joins the code's channel (beta testers)."""
    return f"{API_PREFIX}/devices/{device_id}/redeem"


def leave_preview_path(device_id: str) -> str:
    """POST: back to stable, keeping the running build until stable passes it."""
    return f"{API_PREFIX}/devices/{device_id}/leave-preview"


FEEDBACK_PATH: Final = f"{API_PREFIX}/feedback"  # POST {text, build, category, device_id, logs}


def vote_path(group_id: int | str) -> str:
    """POST: a tester's vote for a group of feedback (once per tester and group)."""
    return group_action_path(group_id, "vote")


# ---------------------------------------------------------------------- the admin API
# Release engineers, viewers and admins (server/api_client.py); the signing side posts releases.

RELEASES_PATH: Final = f"{API_PREFIX}/releases"  # POST a signed release; GET every release
DEVICES_PATH: Final = f"{API_PREFIX}/devices"  # GET the fleet
REPORTS_PATH: Final = f"{API_PREFIX}/reports"  # GET ?device_id=&limit=, newest first
ROLLOUTS_PATH: Final = f"{API_PREFIX}/rollouts"  # POST a staged rollout; GET every one
EVALUATE_ROLLOUTS_PATH: Final = f"{ROLLOUTS_PATH}/evaluate"  # POST: one scheduler tick, now
TRAIN_PATH: Final = f"{API_PREFIX}/train"  # POST a build onto the train; GET every train
ADVANCE_TRAIN_PATH: Final = f"{TRAIN_PATH}/advance"
ANNOUNCEMENTS_PATH: Final = f"{API_PREFIX}/announcements"
FCODES_PATH: Final = f"{API_PREFIX}/fcodes"  # POST: issue invite codes
SURFACING_PATH: Final = f"{FEEDBACK_PATH}/surfacing"  # GET ?build=: ranked feedback groups
TOKENS_PATH: Final = f"{API_PREFIX}/tokens"
WHOAMI_PATH: Final = f"{API_PREFIX}/whoami"  # GET: the role and subject of the caller's token
HEALTH_PATH: Final = "/health"  # GET, no token: up, and how long until the repository expires


def commands_path(device_id: str) -> str:
    """POST a command for one device (delivered by its next poll, rung by MQTT)."""
    return f"{DEVICES_PATH}/{device_id}/commands"


def rollout_path(rollout_id: str) -> str:
    """GET one staged rollout's status; POST a plain rollout's percentage or paused flag."""
    return f"{ROLLOUTS_PATH}/{rollout_id}"


def rollout_action_path(rollout_id: str, action: str) -> str:
    """POST {"reason"}: pause, resume, abort or override one staged rollout."""
    return f"{ROLLOUTS_PATH}/{rollout_id}/{action}"


def group_action_path(group_id: int | str, action: str) -> str:
    """POST to one feedback group: "vote", "blocking" or "close"."""
    return f"{FEEDBACK_PATH}/groups/{group_id}/{action}"


def token_path(name: str) -> str:
    """DELETE: revoke the active token with this name."""
    return f"{TOKENS_PATH}/{name}"
