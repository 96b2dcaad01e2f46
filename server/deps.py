"""FastAPI dependencies: the app state, a session per request, the device of the path.

Role checks live in `server.auth` (`require_role`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from server.auth import device_of_credential
from server.input_bounds import NameInPath
from server.models import Device
from server.request_scope import SessionDep, StateDep, TokenDep, get_session, get_state

__all__ = ["DeviceDep", "SessionDep", "StateDep", "TokenDep", "get_session", "get_state"]


def current_device(
    device_id: NameInPath, session: SessionDep, state: StateDep, token: TokenDep
) -> Device:
    """The device of the path, authenticated by its own credential (401 none or unknown,
    403 another device's or a non-device token): one query when the credential is good."""
    return device_of_credential(session, state.settings, device_id, token)


DeviceDep = Annotated[Device, Depends(current_device)]
