"""Fakes of the real boot tools, for tests and the demo: Python programs that behave like
fw_printenv/fw_setenv, grub-editenv, update_engine_client and friends, plus each bootloader's
power-on logic. `install_tool` puts one on a PATH directory as an executable script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def install_tool(bin_dir: Path, name: str, module: str, *fixed_args: str) -> Path:
    """Write `bin_dir/name`, an executable running `module.main([name, *fixed_args, *args])`
    (fixed arguments point a fake at its state, where the real tool has a fixed location)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"from {module} import main\n"
        f"sys.exit(main([{name!r}, *{list(fixed_args)!r}, *sys.argv[1:]]))\n"
    )
    script.chmod(0o755)
    return script


def path_with(bin_dir: Path) -> str:
    """A PATH value that finds the fakes in `bin_dir` first."""
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
