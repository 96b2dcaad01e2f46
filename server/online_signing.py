"""The server's one signing duty: keep timestamp (and snapshot) fresh with the online keys.

Devices stop trusting a repository whose timestamp has expired (a day by default), which
is what bounds a freeze attack. The server holds only the online keys (a folder with
timestamp and snapshot keys, never root, targets or channel keys) and re-signs on a timer
well inside the timestamp's lifetime. A failure is logged and retried on the next tick;
the repository is left as it was (signing writes timestamp.json last, atomically).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from server.metrics import process_metrics
from signing.errors import SigningError
from signing.online import renew_online_roles
from signing.storage import LocalStorage, Storage

log = logging.getLogger(__name__)
WORKER = "online-signing"


class OnlineRoleRenewer:
    def __init__(self, storage: Storage, keys_dir: Path, *, interval_s: float) -> None:
        self._storage = storage
        self._keys_dir = keys_dir
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_repo(cls, repo_dir: Path, keys_dir: Path, *, interval_s: float) -> OnlineRoleRenewer:
        return cls(LocalStorage(repo_dir), keys_dir, interval_s=interval_s)

    def tick(self) -> list[str]:
        """Re-sign what the online keys may; returns the roles re-signed ([] on failure)."""
        try:
            roles = renew_online_roles(self._storage, self._keys_dir)
        except SigningError as exc:
            log.error("could not re-sign the online roles: %s", exc)
            process_metrics().worker_failed(WORKER)
            return []
        process_metrics().worker_ticked(WORKER)
        log.info("re-signed %s", ", ".join(roles) or "nothing")
        return roles

    def start(self) -> None:
        if self._interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="online-signing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self._interval_s)
