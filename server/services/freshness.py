"""How fresh the served TUF repository is: the timestamp's expiry, read from the file the
devices fetch (no signature check: that is the devices' job and `ota repo status`'s).

A timestamp lives a day; after it expires every device refuses every update, so the server
re-signs it with its online keys (server/online_signing.py) and `/health` says how long is
left. Pure apart from reading one file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from server.api_models import Health, RepoFreshness

TIMESTAMP_FILE = Path("metadata") / "timestamp.json"
EXPIRY_WARNING_S = 6 * 3600.0  # less than this left is a problem worth a look


class UnreadableTimestampError(Exception):
    """timestamp.json is missing or not TUF metadata."""


def read_timestamp(repo_dir: Path) -> tuple[int, datetime]:
    """The served timestamp's version and expiry; UnreadableTimestampError if there is none."""
    path = repo_dir / TIMESTAMP_FILE
    try:
        signed = json.loads(path.read_bytes())["signed"]
        expires = datetime.fromisoformat(str(signed["expires"]).replace("Z", "+00:00"))
        return int(signed["version"]), expires
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableTimestampError(f"cannot read {path}: {exc}") from None


def freshness(
    version: int, expires: datetime, now: datetime, *, renewing: bool, renew_every_s: float
) -> RepoFreshness:
    return RepoFreshness(
        timestamp_version=version,
        expires=expires,
        expires_in_s=round((expires - now).total_seconds(), 1),
        renewing=renewing,
        renew_every_s=renew_every_s,
    )


def problems_of(repo: RepoFreshness) -> list[str]:
    """What an operator should look at; [] when the repository stays fresh on its own."""
    found = []
    if repo.expires_in_s <= 0:
        found.append("the repository's timestamp has expired: devices refuse every update")
    elif repo.expires_in_s < EXPIRY_WARNING_S:
        found.append(f"the repository's timestamp expires in {repo.expires_in_s / 3600:.1f} h")
    if not repo.renewing:
        found.append(
            "no online keys: the timestamp is not re-signed (ota server run --online-keys DIR)"
        )
    return found


def server_health(
    repo_dir: Path | None, *, renewing: bool, renew_every_s: float, now: datetime | None = None
) -> Health:
    if repo_dir is None:
        return Health(ok=True, repository=None, problems=[])
    try:
        version, expires = read_timestamp(repo_dir)
    except UnreadableTimestampError as exc:
        return Health(ok=False, repository=None, problems=[str(exc)])
    repo = freshness(
        version,
        expires,
        now or datetime.now(UTC),
        renewing=renewing,
        renew_every_s=renew_every_s,
    )
    problems = problems_of(repo)
    return Health(ok=repo.expires_in_s > 0, repository=repo, problems=problems)
