"""The TUF repository as static files. starlette's FileResponse answers Range requests
(206 + Content-Range, 416 when unsatisfiable), so devices resume downloads. With an object
store configured, images are a redirect there (server.services.target_links)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from server.deps import StateDep
from server.input_bounds import FileInPath, FilePathInPath
from server.services.files import repo_file
from wire import TUF_METADATA_PATH, TUF_TARGETS_PATH

router = APIRouter(tags=["tuf"])


class RepoFileResponse(FileResponse):
    """starlette sends files in 64 KiB pieces, each a trip through the event loop; 1 MiB
    pieces serve a 512 MiB image about 3x faster here (bench: curl 3.4 s -> 1.1 s) for
    1 MiB of memory per download in flight."""

    chunk_size = 1024 * 1024


@router.get(TUF_METADATA_PATH + "{name}")
def tuf_metadata(name: FileInPath, state: StateDep) -> RepoFileResponse:
    path = repo_file(state.settings.repo_dir, "metadata", name)
    headers = {"Cache-Control": "no-cache"}
    return RepoFileResponse(path, media_type="application/json", headers=headers)


@router.get(TUF_TARGETS_PATH + "{target:path}", response_model=None)
def tuf_target(target: FilePathInPath, state: StateDep) -> RepoFileResponse | RedirectResponse:
    """An image: from the object store when one is configured (a 307 there: the device
    follows it, Range header and all, and the server sends no image bytes), else from
    repo_dir. `no-store`: a presigned link expires, no cache may keep the redirect."""
    if state.target_links is not None:
        url = state.target_links.url_for(target)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    path = repo_file(state.settings.repo_dir, "targets", target)
    return RepoFileResponse(path, media_type="application/octet-stream")
