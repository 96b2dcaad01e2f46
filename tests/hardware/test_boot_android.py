"""The Android backend against fake bootctl/update_engine_client and a fake A/B bootloader."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from hardware.android import AndroidControl, completion_code, status_update
from hardware.bootcontrol import BootControl, BootControlError, PayloadApplier, Slot
from hardware.fakes import android_tools as fake_android
from hardware.registry import open_boot_control


@pytest.fixture
def phone(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A fake phone; its options name its fake bootctl and update_engine_client."""
    return fake_android.provision(tmp_path / "phone")


@pytest.fixture
def android(phone: tuple[Path, dict[str, Any]]) -> AndroidControl:
    boot = open_boot_control("android", phone[1])
    assert isinstance(boot, AndroidControl)
    return boot


@pytest.fixture
def payload(tmp_path: Path) -> tuple[str, list[str], bytes]:
    body = b"payload.bin contents" * 50
    path = tmp_path / "ota.zip"
    path.write_bytes(b"zip header" + body + b"zip trailer")
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return f"file://{path}", [f"FILE_HASH={digest}", f"FILE_SIZE={len(body)}"], body


def install(android: AndroidControl, payload: tuple[str, list[str], bytes]) -> Slot:
    url, headers, body = payload
    target = android.status().active.other
    android.mark_unbootable(target)
    android.apply_payload(url, len(b"zip header"), len(body), headers)
    android.set_trial(target)
    return target


def test_fresh_phone_runs_committed_slot_a(android: AndroidControl) -> None:
    assert isinstance(android, BootControl)
    status = android.status()
    assert (status.active, status.committed, status.trial, status.pending_trial) == (
        Slot.A,
        Slot.A,
        False,
        None,
    )


def test_payload_applied_then_trial_then_commit(
    android: AndroidControl, phone: tuple[Path, dict[str, Any]], payload: Any
) -> None:
    misc, _ = phone
    target = install(android, payload)
    assert (misc.parent / "system_b.img").read_bytes() == payload[2]
    assert android.status().pending_trial is target
    assert android.status().attempts_left == 6  # kActiveTries
    android.reboot()
    status = android.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.A, True)
    android.mark_good()
    fake_android.power_on(misc)
    status = android.status()
    assert (status.active, status.committed, status.trial) == (Slot.B, Slot.B, False)


def test_applied_payload_is_not_armed_until_set_trial(
    android: AndroidControl, phone: tuple[Path, dict[str, Any]], payload: Any
) -> None:
    url, headers, body = payload
    android.apply_payload(url, len(b"zip header"), len(body), headers)
    assert android.status().pending_trial is None
    fake_android.power_on(phone[0])
    assert android.status().active is Slot.A


def test_unconfirmed_trial_falls_back_after_its_tries(
    android: AndroidControl, phone: tuple[Path, dict[str, Any]], payload: Any
) -> None:
    install(android, payload)
    booted = [fake_android.power_on(phone[0]) for _ in range(8)]
    assert booted == [1] * 6 + [0, 0]
    status = android.status()
    assert (status.active, status.committed, status.pending_trial) == (Slot.A, Slot.A, None)


def test_rollback_after_failed_health_check(android: AndroidControl, payload: Any) -> None:
    install(android, payload)
    android.reboot()
    android.mark_unbootable(Slot.B)
    with pytest.raises(BootControlError, match="unbootable"):
        android.mark_good()
    android.reboot()
    assert android.status().active is Slot.A


def test_update_engine_failures_are_reported(android: AndroidControl, payload: Any) -> None:
    url, headers, body = payload
    with pytest.raises(BootControlError, match="kPayloadHashMismatchError"):
        android.apply_payload(url, 0, len(body), headers)
    with pytest.raises(BootControlError, match="kDownloadTransferError"):
        android.apply_payload("file:///nonexistent", 0, 10, [])
    with pytest.raises(BootControlError, match="bad payload range"):
        android.apply_payload(url, -1, 10, [])
    assert android.status().pending_trial is None  # nothing got armed


def test_open_slot_points_to_apply_payload(android: AndroidControl) -> None:
    with pytest.raises(BootControlError, match="apply_payload"):
        android.open_slot(Slot.B)
    assert android.slot_size(Slot.B) == 1024 * 1024


def test_committed_slot_is_protected(android: AndroidControl) -> None:
    with pytest.raises(BootControlError, match="committed"):
        android.mark_unbootable(Slot.A)
    with pytest.raises(BootControlError, match="committed"):
        android.set_trial(Slot.A)


def test_completion_code_parsing() -> None:
    out = (
        "onStatusUpdate(UPDATE_STATUS_FINALIZING (5), 1)\n"
        "onPayloadApplicationComplete(ErrorCode::kSuccess (0))\n"
    )
    assert completion_code(out) == "ErrorCode::kSuccess"
    with pytest.raises(BootControlError, match="without reporting"):
        completion_code("onStatusUpdate(UPDATE_STATUS_IDLE (0), 0)\n")


def test_progress_is_followed_as_update_engine_reports_it(
    android: AndroidControl, payload: Any
) -> None:
    url, headers, body = payload
    heard: list[tuple[str, float]] = []
    android.apply_payload(url, len(b"zip header"), len(body), headers, lambda *u: heard.append(u))
    downloading = [fraction for status, fraction in heard if status == "UPDATE_STATUS_DOWNLOADING"]
    assert downloading == sorted(downloading)
    assert downloading[-1] == 1.0
    assert heard[-1] == ("UPDATE_STATUS_FINALIZING", 1.0)


def test_status_update_parsing() -> None:
    line = "[INFO:x.cc(80)] onStatusUpdate(UPDATE_STATUS_DOWNLOADING (3), 0.25)"
    assert status_update(line) == ("UPDATE_STATUS_DOWNLOADING", 0.25)
    assert status_update("onPayloadApplicationComplete(ErrorCode::kSuccess (0))") is None
    assert status_update("onStatusUpdate(garbled)") is None


def test_a_tool_that_hangs_is_stopped(phone: tuple[Path, dict[str, Any]]) -> None:
    hanging = AndroidControl.from_options(
        {**phone[1], "update_engine_client": ["sh", "-c", "sleep 30", "sh"], "apply_timeout_s": 1}
    )
    with pytest.raises(BootControlError, match="did not finish within 1s"):
        hanging.apply_payload("file:///dev/null", 0, 1, [])


def test_android_is_a_payload_applier(android: AndroidControl) -> None:
    assert isinstance(android, PayloadApplier)


def test_fake_tools_answer_as_aosp_documents(
    phone: tuple[Path, dict[str, Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    """bootctl's yes/no answers print 1/0 and exit 0/70; usage errors exit 64; a payload
    applied without switching slots reports kUpdatedButNotActive on stderr and exits 0."""
    misc = str(phone[0])
    assert fake_android.main(["bootctl", misc, "is-slot-bootable", "1"]) == 70
    assert fake_android.main(["bootctl", misc, "get-suffix", "1"]) == 0
    assert fake_android.main(["bootctl", misc, "frobnicate"]) == 64
    assert capfd.readouterr().out == "0\n_b\n"
    applied = ["--update", "--follow", "--payload=file:///dev/null", "--size=0"]
    no_switch = [*applied, "--headers=SWITCH_SLOT_ON_REBOOT=0"]
    assert fake_android.main(["update_engine_client", misc, *no_switch]) == 0
    assert "kUpdatedButNotActive (52)" in capfd.readouterr().err
    assert fake_android.main(["update_engine_client", misc, "--update", "stray"]) == 1
