"""`ota-agent`: the device's command line. argparse only: the agent's install stays small."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError
from agent.identity import device_key
from agent.tester import add_commands as add_tester_commands
from hardware.bootcontrol import BootControlError

BACKEND_DOCS = "docs/agent.md"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "tuf-client":
        from agent.conformance import main as tuf_client_main

        return tuf_client_main(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = ns.func(ns)
    except AgentError as exc:
        print(f"ota-agent: error: {exc}", file=sys.stderr)
        return 1
    except BootControlError as exc:
        print(f"ota-agent: error: [slot] {exc} (see {BACKEND_DOCS})", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ota-agent", description="Orange Friday device agent")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the update daemon")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(func=_cmd_run)
    status = sub.add_parser("status", help="print the journal and pending reports as JSON")
    status.add_argument("--config", type=Path, required=True)
    status.set_defaults(func=_cmd_status)
    doctor = sub.add_parser(
        "doctor", help="check this device's set-up, one line a check, and say what to fix"
    )
    doctor.add_argument("--config", type=Path, required=True)
    doctor.add_argument("--json", action="store_true", help="the checks as JSON")
    doctor.set_defaults(func=_cmd_doctor)
    enroll = sub.add_parser(
        "enroll", help="make this device's key (once) and enroll it with an enrollment token"
    )
    enroll.add_argument("--config", type=Path, required=True)
    given = enroll.add_mutually_exclusive_group()
    given.add_argument(
        "--token-file", type=Path, help="a file holding the enrollment token ('-': stdin)"
    )
    given.add_argument(
        "--token", help=f"the token itself (visible in `ps`; prefer --token-file or ${TOKEN_ENV})"
    )
    enroll.set_defaults(func=_cmd_enroll)
    token = sub.add_parser(
        "access-token", help="print a fresh access token (e.g. for the dashboard's join form)"
    )
    token.add_argument("--config", type=Path, required=True)
    token.set_defaults(func=_cmd_access_token)
    _add_sim_commands(sub)
    sub.add_parser("tuf-client", help="TUF conformance client (see --help of it)")
    add_tester_commands(sub)  # join-preview, leave-preview, feedback, vote
    return parser


class StopRequested(BaseException):
    """SIGTERM or Ctrl-C: stop now, whatever runs. Every step of the agent is safe to cut
    short (it is journaled first, as for a power cut) and resumes at the next start."""


def _cmd_run(ns: argparse.Namespace) -> int:
    from agent.daemon import AgentDaemon, build_agent

    config = load_config(ns.config)
    _require_key(config, ns.config)
    daemon = AgentDaemon(config, build_agent(config))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            return  # already stopping: let the doorbell close
        stop.set()
        daemon.wake()
        raise StopRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.run(stop)
    except StopRequested as why:
        logging.getLogger("agent").info("%s: stopped on %s", config.device_id, why)
    return 0


def _cmd_status(ns: argparse.Namespace) -> int:
    from agent.journal import Journal
    from agent.outbox import Outbox

    config = load_config(ns.config)
    record = Journal(config.data_dir / "journal.json").load()
    out: dict[str, Any] = {
        "device_id": config.device_id,
        "journal": None if record is None else json.loads(record.to_json()),
        "pending_reports": len(Outbox(config.data_dir / "outbox")),
    }
    print(json.dumps(out, indent=2))
    return 0


def _cmd_doctor(ns: argparse.Namespace) -> int:
    """Exit 0 if every check passed, 1 if any failed."""
    from agent.doctor import diagnose, render

    checks = diagnose(ns.config)
    print(render(checks, as_json=ns.json))
    return 0 if all(c.ok for c in checks) else 1


TOKEN_ENV = "OTA_ENROLLMENT_TOKEN"  # noqa: S105  # a variable name, not the token
MAX_TOKEN_BYTES = 4096


def enrollment_token(token: str | None, token_file: Path | None, environ: Mapping[str, str]) -> str:
    """The enrollment token from --token-file, --token or $OTA_ENROLLMENT_TOKEN, in that
    order; AgentError (one line, naming where it looked) when none gives a usable one."""
    if token_file is not None:
        try:
            raw = (
                sys.stdin.read(MAX_TOKEN_BYTES + 1)
                if str(token_file) == "-"
                else token_file.read_text(encoding="utf-8", errors="strict")
            )
        except (OSError, UnicodeDecodeError) as exc:
            raise AgentError(f"cannot read the enrollment token from {token_file}: {exc}") from None
        where = str(token_file)
    elif token is not None:
        raw, where = token, "--token"
    else:
        raw, where = environ.get(TOKEN_ENV, ""), f"${TOKEN_ENV}"
        if not raw:
            raise AgentError(f"no enrollment token: give --token-file FILE or set ${TOKEN_ENV}")
    value = raw.strip()
    if not value or len(value.encode()) > MAX_TOKEN_BYTES or not value.isprintable():
        raise AgentError(f"the enrollment token in {where} is empty, too long or not one line")
    return value


def _cmd_enroll(ns: argparse.Namespace) -> int:
    from agent.identity import device_key_or_new, save_broker_secret
    from agent.server_api import ServerApi

    token = enrollment_token(ns.token, ns.token_file, os.environ)  # before anything is written
    config = load_config(ns.config)
    key = device_key_or_new(config.data_dir)  # made once; private (0600) in the data dir
    api = ServerApi(config.server_url, config.device_id, key)
    save_broker_secret(config.data_dir, api.enroll(token, config.model, config.channel))
    print(f"enrolled {config.device_id}; its key and broker secret are in {config.data_dir}")
    return 0


def _cmd_access_token(ns: argparse.Namespace) -> int:
    """Sign a fresh challenge with the device's key; the token lives an hour."""
    from agent.server_api import device_api

    token = device_api(load_config(ns.config)).access_token()
    if not token:
        raise AgentError("this device has no key yet: run `ota-agent enroll` first")
    print(token)
    return 0


def _require_key(config: AgentConfig, path: Path) -> None:
    if device_key(config.data_dir) is None:
        raise ConfigError(
            f"no device key in {config.data_dir}: enroll first with "
            f"`ota-agent enroll --config {path} --token-file FILE`"
        )


def _add_sim_commands(sub: Any) -> None:
    sim = sub.add_parser("sim", help='the simulated device (`[slot] backend = "sim"`)')
    sim_sub = sim.add_subparsers(required=True, metavar="COMMAND")
    provision = sim_sub.add_parser(
        "provision", help="create the simulated device at [slot] root: two slots, a running"
    )
    provision.add_argument("--config", type=Path, required=True)
    provision.add_argument(
        "--slot-size-mb", type=int, default=64, help="size of each slot (sparse; default 64)"
    )
    provision.set_defaults(func=_cmd_sim_provision)


def _cmd_sim_provision(ns: argparse.Namespace) -> int:
    from hardware.options import required_str
    from hardware.sim import ENV_FILE, SimDevice

    config = load_config(ns.config)
    if config.slot_backend != "sim":
        raise ConfigError(f'[slot] backend is {config.slot_backend!r}, not "sim"')
    root = Path(required_str(config.slot_options, "root", "sim"))
    if (root / ENV_FILE).exists():
        print(f"a simulated device already exists at {root}; left as it is")
        return 0
    SimDevice.provision(root, slot_size=ns.slot_size_mb * 1024 * 1024, model=config.model)
    print(f"simulated device {config.model} at {root}: slot a running, slot b empty")
    return 0
