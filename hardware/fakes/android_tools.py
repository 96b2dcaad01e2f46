"""Fake Android boot HAL tools and bootloader over a JSON "misc partition".

Written from AOSP, not from hardware/android.py:

- Slot metadata as in libboot_control (bootable/recovery boot_control): each slot has a
  priority (0-15), tries_remaining and successful_boot. `set-active-boot-slot N` gives N
  priority 15 and 6 tries (kActiveTries) and caps the others at 14, leaving the successful bit
  alone; `set-slot-as-unbootable N` clears tries and the successful bit;
  `mark-boot-successful` sets the successful bit and one try on the running slot. A slot is
  bootable while it has tries; marked successful when successful and it has tries.
- `bootctl` (system/extras/bootctl): slot numbers print as `%u`; `get-suffix` prints `_a`;
  `is-slot-bootable` / `is-slot-marked-successful` print 1 or 0 and exit 0 or 70
  (EX_SOFTWARE); `get-active-boot-slot` is the slot of highest priority, the running one
  unless another's is higher; an unknown command prints usage and exits 64 (EX_USAGE).
- The bootloader, as U-Boot's android_ab does it: among slots with tries left, the highest
  priority, then successful, then most tries; an unconfirmed slot spends a try.
- `update_engine_client` (update_engine_client_android.cc): `--update --follow
  --payload=URL --offset=N --size=N --headers=K=V\\n...`; positional arguments are refused;
  progress and the outcome are logged to stderr, `onStatusUpdate(UPDATE_STATUS_X (n), p)` and
  `onPayloadApplicationComplete(ErrorCode::kX (n))`; it exits 0 on kSuccess or
  kUpdatedButNotActive (52, what a payload applied with SWITCH_SLOT_ON_REBOOT=0 reports), 1
  otherwise. update_engine marks the target slot unbootable before writing it and, unless
  told SWITCH_SLOT_ON_REBOOT=0, sets it active afterwards. Here it checks the FILE_HASH
  (base64 SHA-256) and FILE_SIZE headers of payload_properties.txt and writes the payload
  range into `system_<slot>.img`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import durable
from hardware.fakes import fake_command, install_tool

ACTIVE_PRIORITY = 15
ACTIVE_TRIES = 6  # libboot_control's kActiveTries
EX_SOFTWARE = 70
EX_USAGE = 64
SUFFIXES = ("_a", "_b")
SUCCESS = ("ErrorCode::kSuccess", 0)
NOT_ACTIVE = ("ErrorCode::kUpdatedButNotActive", 52)
LOG = "[INFO:update_engine_client_android.cc(80)] "
PROGRESS_STEPS = 4
TOOLS = ("bootctl", "update_engine_client")

Misc = dict[str, Any]


def read_misc(path: Path) -> Misc:
    misc: Misc = json.loads(path.read_text())
    return misc


def write_misc(path: Path, misc: Misc) -> None:
    durable.atomic_write(path, json.dumps(misc, indent=1).encode(), mode=None, tag="misc")


# --------------------------------------------------------------------------- libboot_control


def set_active(misc: Misc, number: int) -> None:
    for other, slot in enumerate(misc["slots"]):
        if other != number:
            slot["priority"] = min(slot["priority"], ACTIVE_PRIORITY - 1)
    misc["slots"][number].update(priority=ACTIVE_PRIORITY, tries_remaining=ACTIVE_TRIES)


def set_unbootable(misc: Misc, number: int) -> None:
    misc["slots"][number].update(successful_boot=False, tries_remaining=0)


def mark_successful(misc: Misc) -> None:
    misc["slots"][misc["current"]].update(successful_boot=True, tries_remaining=1)


def is_bootable(misc: Misc, number: int) -> bool:
    return bool(misc["slots"][number]["tries_remaining"] != 0)


def is_marked_successful(misc: Misc, number: int) -> bool:
    slot = misc["slots"][number]
    return bool(slot["successful_boot"] and slot["tries_remaining"])


def active_boot_slot(misc: Misc) -> int:
    best = misc["current"]
    for number, slot in enumerate(misc["slots"]):
        if slot["priority"] > misc["slots"][best]["priority"]:
            best = number
    return int(best)


# --------------------------------------------------------------------------- bootctl


def bootctl(misc_path: Path, args: list[str]) -> int:
    misc = read_misc(misc_path)
    command = args[0] if args else ""
    if command in ("get-number-slots", "get-current-slot", "get-active-boot-slot"):
        print(_slot_query(misc, command))
        return 0
    if command == "mark-boot-successful":
        mark_successful(misc)
        write_misc(misc_path, misc)
        return 0
    number = _slot_argument(args)
    if number is None:
        print(f"Usage:\n  {Path(sys.argv[0]).name} COMMAND", file=sys.stderr)
        return EX_USAGE
    return _slot_command(misc_path, misc, command, number)


def _slot_query(misc: Misc, command: str) -> int:
    if command == "get-number-slots":
        return len(misc["slots"])
    if command == "get-current-slot":
        return int(misc["current"])
    return active_boot_slot(misc)


def _slot_argument(args: list[str]) -> int | None:
    known = (
        "get-suffix",
        "is-slot-bootable",
        "is-slot-marked-successful",
        "set-active-boot-slot",
        "set-slot-as-unbootable",
    )
    if len(args) < 2 or args[0] not in known or not args[1].isdigit():
        return None
    return int(args[1])


def _slot_command(misc_path: Path, misc: Misc, command: str, number: int) -> int:
    if number >= len(misc["slots"]):
        print("Error: Invalid slot", file=sys.stderr)
        return EX_SOFTWARE
    if command == "get-suffix":
        print(SUFFIXES[number])
        return 0
    if command in ("is-slot-bootable", "is-slot-marked-successful"):
        answer = is_bootable if command == "is-slot-bootable" else is_marked_successful
        yes = answer(misc, number)
        print(int(yes))
        return 0 if yes else EX_SOFTWARE
    (set_active if command == "set-active-boot-slot" else set_unbootable)(misc, number)
    write_misc(misc_path, misc)
    return 0


# --------------------------------------------------------------------------- update_engine


def update_engine_client(misc_path: Path, args: list[str]) -> int:
    positional = [arg for arg in args if not arg.startswith("--")]
    if positional:
        _log(f"Found a positional argument '{positional[0]}'.")
        return 1
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in args)
    if "update" not in flags:
        _log("only --update is faked")
        return 1
    misc = read_misc(misc_path)
    target = 1 - misc["current"]
    set_unbootable(misc, target)
    write_misc(misc_path, misc)
    headers = dict(h.partition("=")[::2] for h in flags.get("headers", "").splitlines() if h)
    _status("UPDATE_STATUS_DOWNLOADING", 3, 0.0)
    outcome = _apply(misc_path.parent / f"system_{'ab'[target]}.img", flags, headers)
    if outcome == SUCCESS:
        _status("UPDATE_STATUS_FINALIZING", 5, 1.0)
        if headers.get("SWITCH_SLOT_ON_REBOOT") == "0":
            outcome = NOT_ACTIVE
        else:
            set_active(misc, target)
            write_misc(misc_path, misc)
    _log(f"onPayloadApplicationComplete({outcome[0]} ({outcome[1]}))")
    return 0 if outcome in (SUCCESS, NOT_ACTIVE) else 1


def _log(message: str) -> None:
    print(LOG + message, file=sys.stderr, flush=True)


def _status(name: str, code: int, progress: float) -> None:
    _log(f"onStatusUpdate({name} ({code}), {progress:g})")


def _apply(image: Path, flags: dict[str, str], headers: dict[str, str]) -> tuple[str, int]:
    source = Path(flags.get("payload", "").removeprefix("file://"))
    offset, size = int(flags.get("offset", "0")), int(flags.get("size", "0"))
    try:
        with open(source, "rb") as payload:
            payload.seek(offset)
            data = b""
            for step in range(1, PROGRESS_STEPS + 1):  # update_engine reports as it goes
                data += payload.read(size * step // PROGRESS_STEPS - len(data))
                _status("UPDATE_STATUS_DOWNLOADING", 3, step / PROGRESS_STEPS)
    except OSError:
        return ("ErrorCode::kDownloadTransferError", 9)
    if len(data) != size or headers.get("FILE_SIZE", str(size)) != str(size):
        return ("ErrorCode::kPayloadSizeMismatchError", 11)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    if headers.get("FILE_HASH", digest) != digest:
        return ("ErrorCode::kPayloadHashMismatchError", 10)
    durable.atomic_write(image, data, mode=None, tag="system")
    return SUCCESS


# --------------------------------------------------------------------------- bootloader


def power_on(misc_path: Path) -> int:
    """Boot as U-Boot's android_ab does; returns the slot number booted."""
    misc = read_misc(misc_path)
    candidates = [n for n, slot in enumerate(misc["slots"]) if slot["tries_remaining"] > 0]
    if not candidates:
        raise RuntimeError("no bootable slot")
    number = max(candidates, key=lambda n: _preference(misc["slots"][n]))
    slot = misc["slots"][number]
    if not slot["successful_boot"]:
        slot["tries_remaining"] -= 1
    misc["current"] = number
    write_misc(misc_path, misc)
    return number


def _preference(slot: dict[str, Any]) -> tuple[int, bool, int]:
    return slot["priority"], slot["successful_boot"], slot["tries_remaining"]


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
    """A fake phone under `root` running slot 0, marked successful, with slot 1 unbootable;
    returns its misc file and the backend options (its tools in `root/bin`, the staged
    package in `root/ota_package`)."""
    root.mkdir(parents=True, exist_ok=True)
    misc_path = root / "misc.json"
    running = {"priority": ACTIVE_PRIORITY, "tries_remaining": 1, "successful_boot": True}
    spare = {"priority": ACTIVE_PRIORITY - 1, "tries_remaining": 0, "successful_boot": False}
    write_misc(misc_path, {"current": 0, "slots": [running, spare]})
    options: dict[str, Any] = {
        "reboot_command": fake_command(__name__, str(misc_path)),
        "reboot_wait_s": 0,
        "max_payload_size": 1024 * 1024,
        "payload_path": str(root / "ota_package" / "update.zip"),
    }
    for tool in TOOLS:
        options[tool] = [str(install_tool(root / "bin", tool, __name__, str(misc_path)))]
    return misc_path, options


if __name__ == "__main__":
    sys.exit(main(["reboot", *sys.argv[1:]]))
