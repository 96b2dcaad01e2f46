"""`ota-agent`: the device's command line. argparse only: the agent's install stays small."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.errors import AgentError
from agent.tester import add_commands as add_tester_commands


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
    enroll = sub.add_parser(
        "enroll", help="make this device's key (once) and enroll it with an enrollment token"
    )
    enroll.add_argument("--config", type=Path, required=True)
    enroll.add_argument("--token", required=True)
    enroll.set_defaults(func=_cmd_enroll)
    token = sub.add_parser(
        "access-token", help="print a fresh access token (e.g. for the dashboard's join form)"
    )
    token.add_argument("--config", type=Path, required=True)
    token.set_defaults(func=_cmd_access_token)
    sub.add_parser("tuf-client", help="TUF conformance client (see --help of it)")
    add_tester_commands(sub)  # join-preview, leave-preview, feedback, vote
    return parser


class StopRequested(BaseException):
    """SIGTERM or Ctrl-C: stop now, whatever runs. Every step of the agent is safe to cut
    short (it is journaled first, as for a power cut) and resumes at the next start."""


def _cmd_run(ns: argparse.Namespace) -> int:
    from agent.daemon import AgentDaemon, build_agent

    config = load_config(ns.config)
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


def _cmd_enroll(ns: argparse.Namespace) -> int:
    from agent.identity import device_key_or_new, save_broker_secret
    from agent.server_api import ServerApi

    config = load_config(ns.config)
    key = device_key_or_new(config.data_dir)  # made once; private (0600) in the data dir
    api = ServerApi(config.server_url, config.device_id, key)
    save_broker_secret(config.data_dir, api.enroll(ns.token, config.model, config.channel))
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
