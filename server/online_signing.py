"""The server's one signing duty: keep timestamp (and snapshot) fresh with the online keys.

Devices stop trusting a repository whose timestamp has expired (a day by default), which
is what bounds a freeze attack. The server holds only the online keys (a folder with
timestamp and snapshot keys, never root, targets or channel keys) and re-signs on a timer
well inside the timestamp's lifetime. A failure is logged and retried on the next tick;
the repository is left as it was (signing writes timestamp.json last, atomically).
"""

from __future__ import annotations

import logging
from pathlib import Path

from server.api_models import WorkerHealth
from server.leadership import Leadership
from server.metrics import process_metrics
from server.workers import TickLoop
from signing.errors import SigningError
from signing.online import renew_online_roles
from signing.storage import LocalStorage, Storage

log = logging.getLogger(__name__)
WORKER = "online-signing"


class OnlineRoleRenewer:
    def __init__(
        self,
        storage: Storage,
        keys_dir: Path,
        *,
        interval_s: float,
        leadership: Leadership | None = None,
    ) -> None:
        self._storage = storage
        self._keys_dir = keys_dir
        self._loop = TickLoop(
            WORKER, self.tick, interval_s=interval_s, first_wait=False, leadership=leadership
        )

    @classmethod
    def for_repo(
        cls,
        repo_dir: Path,
        keys_dir: Path,
        *,
        interval_s: float,
        leadership: Leadership | None = None,
    ) -> OnlineRoleRenewer:
        """Re-signing the repository at `repo_dir`, by the leading replica only."""
        return cls(LocalStorage(repo_dir), keys_dir, interval_s=interval_s, leadership=leadership)

    def tick(self) -> list[str]:
        """Re-sign what the online keys may; returns the roles re-signed ([] on failure)."""
        try:
            roles = renew_online_roles(self._storage, self._keys_dir)
        except SigningError as exc:
            log.error("could not re-sign the online roles: %s", exc)
            process_metrics().worker_failed(WORKER)
            return []
        log.info("re-signed %s", ", ".join(roles) or "nothing")
        return roles

    def start(self) -> None:
        """Re-sign now, then every `interval_s`, in a thread no failing tick ends (0: off)."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def health(self) -> WorkerHealth:
        return self._loop.health()
