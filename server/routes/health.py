"""`/health` (no token: load balancers and `curl` ask it) and `/api/v1/whoami` (which role
a token has: `ota release publish` asks before it signs anything)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.api_models import Caller, Health
from server.auth import Principal, Role, require_role
from server.deps import StateDep
from server.services.freshness import server_health
from wire.paths import HEALTH_PATH, WHOAMI_PATH

router = APIRouter(tags=["health"])

AnyCaller = Annotated[Principal, Depends(require_role(*Role))]


@router.get(HEALTH_PATH, response_model=Health)
def get_health(state: StateDep) -> Health:
    settings = state.settings
    return server_health(
        settings.repo_dir,
        renewing=settings.online_keys_dir is not None,
        renew_every_s=settings.online_renew_s,
    )


@router.get(WHOAMI_PATH, response_model=Caller)
def get_whoami(caller: AnyCaller) -> Caller:
    return Caller(role=caller.role, subject=caller.subject)
