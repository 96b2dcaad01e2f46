"""The TUF repository as static files. starlette's FileResponse answers Range requests
(206 + Content-Range, 416 when unsatisfiable), so devices resume downloads."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from agent.protocol import TUF_METADATA_PATH, TUF_TARGETS_PATH
from server.deps import StateDep
from server.services.files import repo_file

router = APIRouter(tags=["tuf"])


@router.get(TUF_METADATA_PATH + "{name}")
def tuf_metadata(name: str, state: StateDep) -> FileResponse:
    path = repo_file(state.settings.repo_dir, "metadata", name)
    return FileResponse(path, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get(TUF_TARGETS_PATH + "{target:path}")
def tuf_target(target: str, state: StateDep) -> FileResponse:
    path = repo_file(state.settings.repo_dir, "targets", target)
    return FileResponse(path, media_type="application/octet-stream")
