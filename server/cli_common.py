"""What the `ota` commands that talk to the server share: the `--server`, `--token` and
`--json` options (OTA_SERVER_URL, OTA_TOKEN), durations, JSON output and `server_api`.

Light on purpose, like `server.cli_errors`: the typed client (httpx, pydantic models and the
server's request schemas, which load FastAPI) is imported when a command runs, not when its
`--help` is shown or its options are parsed wrongly."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from server.cli_errors import EXIT_UNREACHABLE, EXIT_USER, fail

if TYPE_CHECKING:
    from pydantic import BaseModel

    from server.api_client import OtaApi

Item = TypeVar("Item", bound="BaseModel")

ServerOpt = Annotated[str, typer.Option("--server", envvar="OTA_SERVER_URL", help="Server URL.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="OTA_TOKEN", help="Your API token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (a listing: one array).")]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "30m", "12h", "7d" or "2w"; ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 30m, 12h, 7d, 2w)")
    return float(match[1]) * _UNIT_S[match[2]]


@contextmanager
def server_api(server: str, token: str) -> Iterator[OtaApi]:
    """The server's API for one command; a request the server would refuse (checked here
    first), a refusal or an unreachable server ends the command with its reason."""
    from pydantic import ValidationError

    from server.api_client import ApiError, OtaApi

    try:
        with OtaApi(server, token) as api:
            yield api
    except ApiError as exc:
        raise fail(str(exc), EXIT_UNREACHABLE if exc.status is None else EXIT_USER) from None
    except ValidationError as exc:
        raise fail(str(exc)) from None


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def echo_listing(
    items: Sequence[Item], as_json: bool, line: Callable[[Item], str], empty: str
) -> None:
    """A listing: one line per item, or EMPTY when there is none; with --json always one
    JSON array of objects (the API's models, so the keys are the API's), `[]` when empty."""
    if as_json:
        echo_json([item.model_dump(mode="json") for item in items])
        return
    typer.echo("\n".join(line(item) for item in items) or empty)
