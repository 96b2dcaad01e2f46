"""`GET /health` (no token: load balancers and `curl` ask it; it names no device, release or
secret): how long the served repository stays fresh, what to look at, and whether each
background worker (rollout scheduler, online re-signing, MQTT bridge) is alive, when it last
ran and how often it failed. `GET /api/v1/whoami` says which role a token has
(`ota release publish` asks before it signs anything)."""

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
    health = server_health(
        settings.repo_dir,
        renewing=settings.online_keys_dir is not None,
        renew_every_s=settings.online_renew_s,
    )
    workers = [worker.health() for worker in state.workers]
    return health.model_copy(update={"workers": workers})


@router.get(WHOAMI_PATH, response_model=Caller)
def get_whoami(caller: AnyCaller) -> Caller:
    return Caller(role=caller.role, subject=caller.subject)
