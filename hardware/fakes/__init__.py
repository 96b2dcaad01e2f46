"""Fakes of the real boot tools, for tests and the demo: Python programs that behave like
fw_printenv/fw_setenv, grub-editenv, update_engine_client and friends, plus each bootloader's
power-on logic. `install_tool` puts one on a PATH directory as an executable script;
`fake_command` is the argv that runs a fake module as a program (a fake `reboot`).

Both start Python with `-S` and put this checkout on sys.path themselves: the fakes need only
the standard library and `hardware`, and skipping site-packages makes each call several times
faster, which the backend tests (dozens of tool calls each) feel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `hardware`

_RUN_MODULE = (
    "import runpy, sys; sys.path.insert(0, {root!r}); module = sys.argv.pop(1); "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def install_tool(bin_dir: Path, name: str, module: str, *fixed_args: str) -> Path:
    """Write `bin_dir/name`, an executable running `module.main([name, *fixed_args, *args])`
    (fixed arguments point a fake at its state, where the real tool has a fixed location)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable} -S\n"
        "import sys\n"
        f"sys.path.insert(0, {PACKAGE_ROOT!r})\n"
        f"from {module} import main\n"
        f"sys.exit(main([{name!r}, *{list(fixed_args)!r}, *sys.argv[1:]]))\n"
    )
    script.chmod(0o755)
    return script


def fake_command(module: str, *args: str) -> list[str]:
    """The argv that runs `python -m module args...` quickly (see the module docstring)."""
    return [sys.executable, "-S", "-c", _RUN_MODULE.format(root=PACKAGE_ROOT), module, *args]


def path_with(bin_dir: Path) -> str:
    """A PATH value that finds the fakes in `bin_dir` first."""
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
