"""Fake Android boot HAL tools and bootloader over a JSON "misc partition".

Slot metadata follows AOSP's libboot_control: each slot has a priority (0 = unbootable),
tries left and a successful flag. `bootctl` answers like the real one (slot numbers 0/1,
yes/no questions by exit code); `update_engine_client --update --follow --payload=...` marks
the target slot unbootable, writes the payload range into `system_<slot>.img`, checks
FILE_HASH/FILE_SIZE headers, and arms the slot unless told `SWITCH_SLOT_ON_REBOOT=0`.
`power_on` is the bootloader: highest-priority slot that is successful or has tries left,
spending a try on an unconfirmed one; a slot out of tries drops to priority 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command

MAX_PRIORITY = 15
DEFAULT_TRIES = 7
SUCCESS = "ErrorCode::kSuccess (0)"

Misc = dict[str, Any]


def read_misc(path: Path) -> Misc:
    misc: Misc = json.loads(path.read_text())
    return misc


def write_misc(path: Path, misc: Misc) -> None:
    durable.atomic_write(path, json.dumps(misc, indent=1).encode(), mode=None, tag="misc")


def set_active(misc: Misc, number: int) -> None:
    misc["slots"][number] = {"priority": MAX_PRIORITY, "tries": DEFAULT_TRIES, "successful": False}
    other = misc["slots"][1 - number]
    other["priority"] = min(other["priority"], MAX_PRIORITY - 1)


def mark_unbootable(misc: Misc, number: int) -> None:
    misc["slots"][number] = {"priority": 0, "tries": 0, "successful": False}


def active_slot(misc: Misc) -> int:
    return max((0, 1), key=lambda n: (misc["slots"][n]["priority"], -n))


# --------------------------------------------------------------------------- bootctl


def bootctl(misc_path: Path, args: list[str]) -> int:
    misc = read_misc(misc_path)
    command, numbers = args[0], [int(a) for a in args[1:]]
    slots = misc["slots"]
    answers = {
        "get-number-slots": lambda: print(2),
        "get-current-slot": lambda: print(misc["current"]),
        "get-active-boot-slot": lambda: print(active_slot(misc)),
        "get-suffix": lambda: print("_ab"[numbers[0] + 1]),
    }
    if command in answers:
        answers[command]()
        return 0
    if command == "is-slot-bootable":
        return 0 if slots[numbers[0]]["priority"] > 0 else 1
    if command == "is-slot-marked-successful":
        return 0 if slots[numbers[0]]["successful"] else 1
    if command == "mark-boot-successful":
        slots[misc["current"]].update(successful=True)
    elif command == "set-active-boot-slot":
        set_active(misc, numbers[0])
    elif command == "set-slot-as-unbootable":
        mark_unbootable(misc, numbers[0])
    else:
        print(f"Unknown command: {command}", file=sys.stderr)
        return 64
    write_misc(misc_path, misc)
    return 0


# --------------------------------------------------------------------------- update_engine


def update_engine_client(misc_path: Path, args: list[str]) -> int:
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in args)
    if "update" not in flags:
        print("only --update is faked", file=sys.stderr)
        return 1
    misc = read_misc(misc_path)
    target = 1 - misc["current"]
    mark_unbootable(misc, target)
    write_misc(misc_path, misc)
    headers = dict(h.partition("=")[::2] for h in flags.get("headers", "").splitlines() if h)
    outcome = _apply(misc_path.parent / f"system_{'ab'[target]}.img", flags, headers)
    print("onStatusUpdate(UPDATE_STATUS_DOWNLOADING (3), 0.5)")
    if outcome == SUCCESS and headers.get("SWITCH_SLOT_ON_REBOOT") != "0":
        set_active(misc, target)
        write_misc(misc_path, misc)
    print(f"onPayloadApplicationComplete({outcome})")
    return 0 if outcome == SUCCESS else 1


def _apply(image: Path, flags: dict[str, str], headers: dict[str, str]) -> str:
    source = Path(flags.get("payload", "").removeprefix("file://"))
    offset, size = int(flags.get("offset", "0")), int(flags.get("size", "0"))
    try:
        with open(source, "rb") as payload:
            payload.seek(offset)
            data = payload.read(size)
    except OSError:
        return "ErrorCode::kDownloadTransferError (9)"
    if len(data) != size or headers.get("FILE_SIZE", str(size)) != str(size):
        return "ErrorCode::kPayloadSizeMismatchError (11)"
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    if headers.get("FILE_HASH", digest) != digest:
        return "ErrorCode::kPayloadHashMismatchError (10)"
    durable.atomic_write(image, data, mode=None, tag="system")
    return SUCCESS


# --------------------------------------------------------------------------- bootloader


def power_on(misc_path: Path) -> int:
    """Boot as the bootloader would; returns the slot number booted."""
    misc = read_misc(misc_path)
    for number in sorted((0, 1), key=lambda n: (-misc["slots"][n]["priority"], n)):
        slot = misc["slots"][number]
        if slot["priority"] == 0:
            continue
        if slot["successful"] or slot["tries"] > 0:
            slot["tries"] -= 0 if slot["successful"] else 1
            misc["current"] = number
            break
        mark_unbootable(misc, number)  # out of tries: never again
    write_misc(misc_path, misc)
    return int(misc["current"])


def main(argv: list[str]) -> int:
    """Entry point of the installed fakes: `[tool, MISC_PATH, *args]`."""
    tool, misc_path, args = Path(argv[0]).name, Path(argv[1]), argv[2:]
    if tool == "bootctl":
        return bootctl(misc_path, args)
    if tool == "update_engine_client":
        return update_engine_client(misc_path, args)
    power_on(misc_path)  # "reboot"
    return 0


def provision(root: Path) -> tuple[Path, dict[str, Any]]:
    """A fake phone under `root` running slot 0; returns its misc file and backend options."""
    root.mkdir(parents=True, exist_ok=True)
    misc_path = root / "misc.json"
    misc = {"current": 0, "slots": [{"priority": MAX_PRIORITY, "tries": 0, "successful": True}, {}]}
    mark_unbootable(misc, 1)
    write_misc(misc_path, misc)
    options = {
        "reboot_command": fake_command(__name__, str(misc_path)),
        "reboot_wait_s": 0,
        "max_payload_size": 1024 * 1024,
    }
    return misc_path, options


if __name__ == "__main__":
    sys.exit(main(["reboot", *sys.argv[1:]]))
