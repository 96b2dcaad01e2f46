"""`GET /metrics`: Prometheus' text format (server.metrics), for a viewer's token (Prometheus
sends it as `authorization: Bearer`), since fleet numbers are not for everyone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.auth import Principal, Role, require_role
from server.deps import SessionDep, StateDep
from server.metrics import metrics_text, scrape_registry

router = APIRouter(tags=["metrics"])
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER, Role.RELEASE_ENGINEER))]


@router.get("/metrics", response_class=Response)
def get_metrics(session: SessionDep, state: StateDep, _: Viewer) -> Response:
    registry = scrape_registry(session, state.settings.repo_dir)
    return Response(metrics_text(registry), media_type=CONTENT_TYPE_LATEST)
