"""`GET /health`: the server answers, and each background worker (rollout scheduler, online
re-signing, MQTT bridge) says whether it is alive, when it last ran and how often it failed.
No token: it names no device, release or secret, and a load balancer asks it."""

from __future__ import annotations

from fastapi import APIRouter

from server.api_models import Health
from server.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def get_health(state: StateDep) -> Health:
    workers = [worker.health() for worker in state.workers]
    return Health(ok=True, workers=workers)
