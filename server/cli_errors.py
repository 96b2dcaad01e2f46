"""How every `ota` command fails: one line on stderr, `ota: error: ...`, and an exit code a
script can rely on (docs/cli.md):

    0  done
    1  refused or failed: a wrong value, a missing file, the server said no
    2  usage: an unknown option or a missing argument (click's own)
    3  the server (or the port to listen on) could not be reached or used

Light on purpose: imported by `ota --help`."""

from __future__ import annotations

import errno
import socket

import typer

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
PREFIX = "ota: error:"


def fail(message: str, code: int = EXIT_USER) -> typer.Exit:
    """Print the one line and return the Exit to raise: `raise fail("...") from None`."""
    typer.echo(f"{PREFIX} {message}", err=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"ota: warning: {message}", err=True)


def port_free(host: str, port: int, option: str) -> None:
    """Exit with one line if something already listens on host:port (e.g. mosquitto on
    1883): better now than a traceback from inside the server."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
            raise fail(
                f"{host}:{port} {why}; choose another with {option} N", EXIT_UNREACHABLE
            ) from None
