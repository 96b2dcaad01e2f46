"""What a beta tester does from the device: join preview with an F-code, leave it, send
feedback about a build (optionally with a bounded log excerpt), vote on others' reports.

The channel a tester joins is kept in `<data_dir>/channel` (written atomically), which
`agent.config` prefers over the config file's channel, so polls and the MQTT subscription
follow it after a restart. The tester token from the redeem answer is kept, private, in
`<data_dir>/tester_token`; feedback and votes use it (feedback falls back to the device's own
credential)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.config import CHANNEL_OVERRIDE_FILE, AgentConfig, load_config
from agent.errors import AgentError
from agent.journal import Journal
from agent.outbox import Outbox
from agent.server_api import ServerApi
from durable import atomic_write, ensure_dir
from wire import UpdateState

TESTER_TOKEN_FILE: Final = "tester_token"  # noqa: S105  # a file name, not the token
MAX_LOG_EXCERPT: Final = 64 * 1024  # bytes; the server refuses more (413)
LAST_REPORTS: Final = 20
CUT_MARK: Final = "[... {n} earlier bytes cut ...]\n"


def join_preview(config: AgentConfig, code: str) -> dict[str, Any]:
    """Spend an F-code; on success the device's channel and tester token are stored."""
    answer = ServerApi(config.server_url, config.device_id, config.credential).redeem_fcode(code)
    channel, token = answer.get("channel"), answer.get("tester_token")
    if not isinstance(channel, str) or not channel or not isinstance(token, str):
        raise AgentError("the server's redeem answer carries no channel or tester token")
    save_channel(config.data_dir, channel)
    atomic_write(config.data_dir / TESTER_TOKEN_FILE, token.encode())  # 0600
    return answer


def leave_preview(config: AgentConfig) -> dict[str, Any]:
    """Back to stable on the server, then here; the running build stays until stable
    passes it (the agent never installs a version older than the one it runs). The tester
    token is gone: feedback goes on with the device's own credential, votes stop."""
    answer = ServerApi(config.server_url, config.device_id, config.credential).leave_preview()
    channel = answer.get("channel")
    if not isinstance(channel, str) or not channel:
        raise AgentError("the server's leave-preview answer carries no channel")
    save_channel(config.data_dir, channel)
    (config.data_dir / TESTER_TOKEN_FILE).unlink(missing_ok=True)  # the server revoked it
    return answer


def save_channel(data_dir: Path, channel: str) -> None:
    ensure_dir(data_dir)
    atomic_write(data_dir / CHANNEL_OVERRIDE_FILE, f"{channel}\n".encode(), mode=0o644)


def tester_token(data_dir: Path) -> str:
    try:
        return (data_dir / TESTER_TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class FeedbackRequest:
    text: str
    category: str = ""
    build: str = ""  # "" = the version running now (from the journal)
    attach_logs: bool = False


def send_feedback(config: AgentConfig, request: FeedbackRequest) -> dict[str, Any]:
    build = request.build or running_version(config.data_dir)
    if not build:
        raise AgentError("no running version is known yet; name the build with --build")
    body: dict[str, Any] = {
        "text": request.text,
        "build": build,
        "category": request.category,
        "device_id": config.device_id,
    }
    if request.attach_logs:
        body["logs"] = log_excerpt(config.data_dir)
    return _tester_api(config).send_feedback(body)


def vote(config: AgentConfig, group_id: int) -> dict[str, Any]:
    if not tester_token(config.data_dir):
        raise AgentError("only beta testers vote: join preview with an F-code first")
    return _tester_api(config).vote(group_id)


def _tester_api(config: AgentConfig) -> ServerApi:
    token = tester_token(config.data_dir) or config.credential
    return ServerApi(config.server_url, config.device_id, token)


def running_version(data_dir: Path) -> str:
    """The version the journal says runs (the new one while it is on trial)."""
    record = Journal(data_dir / "journal.json").load()
    if record is None:
        return ""
    if record.state is UpdateState.TRIAL and record.target_version:
        return record.target_version
    return record.current_version


def log_excerpt(data_dir: Path, limit: int = MAX_LOG_EXCERPT) -> str:
    """The journal and the last unacknowledged reports, the newest kept if over `limit`."""
    journal = data_dir / "journal.json"
    try:
        journal_text = json.dumps(json.loads(journal.read_bytes()), indent=1, sort_keys=True)
    except (OSError, ValueError) as exc:
        journal_text = f"(no readable journal: {exc})"
    pending = Outbox(data_dir / "outbox").pending()[-LAST_REPORTS:]
    reports = "\n".join(r.to_json().decode() for r in pending) or "(none pending)"
    text = f"== journal ==\n{journal_text}\n== last pending reports ==\n{reports}\n"
    return bounded_tail(text, limit)


def bounded_tail(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else a cut mark and as much of its end as
    fits with it ("" if not even the mark fits)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = limit - len(CUT_MARK.format(n=len(raw)).encode())
    if room <= 0:
        return ""
    keep = raw[len(raw) - room :].decode(errors="ignore")  # a cut character is dropped
    return CUT_MARK.format(n=len(raw) - len(keep.encode())) + keep


# ---------------------------------------------------------------------- ota-agent commands


def add_commands(sub: Any) -> None:
    """`join-preview`, `leave-preview`, `feedback`, `vote` on `ota-agent`'s subparsers."""
    join = sub.add_parser("join-preview", help="redeem an F-code: this device joins preview")
    join.add_argument("--config", type=Path, required=True)
    join.add_argument("--code", required=True, help="the F-code, e.g. F-ABCD-EFGH-JKLM-NPQR")
    join.set_defaults(func=_cmd_join)
    leave = sub.add_parser("leave-preview", help="back to stable (the build stays until passed)")
    leave.add_argument("--config", type=Path, required=True)
    leave.set_defaults(func=_cmd_leave)
    feedback = sub.add_parser("feedback", help="tell the release team what broke")
    feedback.add_argument("--config", type=Path, required=True)
    feedback.add_argument("text")
    feedback.add_argument("--category", default="")
    feedback.add_argument("--build", default="", help="default: the version running now")
    feedback.add_argument(
        "--attach-logs", action="store_true", help=f"add journal + reports (<= {MAX_LOG_EXCERPT} B)"
    )
    feedback.set_defaults(func=_cmd_feedback)
    vote_cmd = sub.add_parser("vote", help="vote for a group of reports (beta testers)")
    vote_cmd.add_argument("--config", type=Path, required=True)
    vote_cmd.add_argument("group_id", type=int)
    vote_cmd.set_defaults(func=_cmd_vote)


def _print(answer: dict[str, Any]) -> int:
    print(json.dumps({k: v for k, v in answer.items() if k != "tester_token"}, indent=2))
    return 0


def _cmd_join(ns: argparse.Namespace) -> int:
    return _print(join_preview(load_config(ns.config), ns.code))


def _cmd_leave(ns: argparse.Namespace) -> int:
    return _print(leave_preview(load_config(ns.config)))


def _cmd_feedback(ns: argparse.Namespace) -> int:
    request = FeedbackRequest(ns.text, ns.category, ns.build, ns.attach_logs)
    return _print(send_feedback(load_config(ns.config), request))


def _cmd_vote(ns: argparse.Namespace) -> int:
    return _print(vote(load_config(ns.config), ns.group_id))
