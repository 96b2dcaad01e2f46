"""Structured logs: one JSON object per line (stdlib logging), carrying the request id and,
where the request names them, the device id and the rollout id.

`server.access_log` sets the context for each request; `configure_json_logging` is called by
`ota serve` (never at import time), so tests and libraries keep their own handlers."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
device_id_var: ContextVar[str] = ContextVar("device_id", default="")
rollout_id_var: ContextVar[str] = ContextVar("rollout_id", default="")
CONTEXT: Final = {"request_id": request_id_var, "device_id": device_id_var,
                  "rollout_id": rollout_id_var}  # fmt: skip
# Attributes every LogRecord has; anything else came in through `extra=` and is logged as is.
STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the request's context, `extra` fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: var.get() for name, var in CONTEXT.items() if var.get()})
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Every log line of the process to stderr as JSON (uvicorn's loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
