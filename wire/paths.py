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


def redeem_path(device_id: str) -> str:
    """POST {"code"}: spend an F-code; the device joins the code's channel (beta testers)."""
    return f"{API_PREFIX}/devices/{device_id}/redeem"


def leave_preview_path(device_id: str) -> str:
    """POST: back to stable, keeping the running build until stable passes it."""
    return f"{API_PREFIX}/devices/{device_id}/leave-preview"


FEEDBACK_PATH: Final = f"{API_PREFIX}/feedback"  # POST {text, build, category, device_id, logs}


def vote_path(group_id: int | str) -> str:
    """POST: a tester's vote for a group of feedback (once per tester and group)."""
    return f"{API_PREFIX}/feedback/groups/{group_id}/vote"
