"""`name=value` lines: what fw_printenv and grub-editenv list print (and the fakes store)."""

from __future__ import annotations

from collections.abc import Mapping


def parse_assignments(text: str) -> dict[str, str]:
    """Lines of `name=value`; blank lines and `#` comments are skipped."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        env[name] = value
    return env


def format_assignments(env: Mapping[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in sorted(env.items()))
