"""One CLI that feels like one tool (issue 11): walked over every `ota` command, the common
options have the same names and environment variables everywhere (docs/cli.md)."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer._click.core import Command, Context  # typer >= 0.29 vendors click
from typer.core import TyperGroup

from server.cli import app

ENV = {"--server": "OTA_SERVER_URL", "--token": "OTA_TOKEN", "--repo": "OTA_REPO"}


def _commands(group: Command, ctx: Context, path: str) -> Iterator[tuple[str, Command]]:
    if not isinstance(group, TyperGroup):
        yield path, group
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{path} {name}"
        yield from _commands(command, Context(command, parent=ctx), f"{path} {name}")


def _every_command() -> list[tuple[str, Command]]:
    root = typer.main.get_command(app)
    return list(_commands(root, Context(root), "ota"))


def test_server_token_and_repo_read_the_same_variables_everywhere() -> None:
    seen = dict.fromkeys(ENV, 0)
    for path, command in _every_command():
        for param in command.params:
            for option, variable in ENV.items():
                if option in getattr(param, "opts", []):
                    seen[option] += 1
                    assert param.envvar == variable, f"{path} {option}"
    assert all(seen.values()), seen  # the walk did reach them


def test_every_json_option_is_spelled_the_same() -> None:
    for path, command in _every_command():
        for param in command.params:
            names = getattr(param, "opts", [])
            if any("json" in name for name in names):
                assert names == ["--json"], f"{path}: {names}"
