"""The TUF repository's files as the HTTP side serves them: only what lies below
metadata/ or targets/, never a path that climbs out, never a directory."""

from __future__ import annotations

from pathlib import Path

from server.errors import NotFoundError

REPO_PARTS = ("metadata", "targets")


def repo_file(repo_dir: Path | None, part: str, relpath: str) -> Path:
    """The file `repo_dir/part/relpath`, or NotFoundError (also for any traversal attempt)."""
    if repo_dir is None:
        raise NotFoundError("this server does not serve a TUF repository (no repo_dir)")
    pieces = repo_pieces(part, relpath)
    base = (repo_dir / part).resolve()
    path = base.joinpath(*pieces).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise NotFoundError(f"not found: {part}/{relpath}")
    return path


def repo_pieces(part: str, relpath: str) -> list[str]:
    """The segments of `relpath` below `part`, or NotFoundError for a path that could climb
    out (empty, ".", ".." segments, backslashes, NUL)."""
    if part not in REPO_PARTS:
        raise NotFoundError(f"no such repository part: {part!r}")
    pieces = relpath.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in pieces):
        raise NotFoundError(f"not found: {part}/{relpath}")
    return pieces
