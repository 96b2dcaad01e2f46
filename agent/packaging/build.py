"""Build what a device installs: the `orangefriday-agent` wheel (agent, hardware, wire,
durable, romdelta: no server, signing or lab) and the `ota-agent` Debian package (that wheel
and its dependencies' wheels, a systemd unit, a default config), both into `--out`.

    python agent/packaging/build.py --out dist        # what `make device-package` runs

The wheel's version and dependencies are the main pyproject's (`[agent]` extra), read here,
so the two cannot drift. The .deb is built with plain `dpkg-deb` (no debhelper); its postinst
makes /opt/ota-agent/venv from the wheels it carries, without network
(docs/decisions/0020-device-package.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
PACKAGES = ("agent", "hardware", "wire", "durable", "romdelta")
# Test harnesses that stay in the checkout: fake bootloaders and the QEMU runner.
LEFT_OUT = ("packaging", "fakes", "uboot_qemu.py", "__pycache__", "*.pyc")
DIST_NAME = "orangefriday-agent"
DEB_NAME = "ota-agent"
MAINTAINER = "Orange Friday release engineering <ota@localhost>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist")
    parser.add_argument("--wheel-only", action="store_true", help="build the wheel, no .deb")
    ns = parser.parse_args(argv)
    out: Path = ns.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="device-package-") as scratch:
        wheel = build_wheel(Path(scratch) / "src", out)
        print(f"wheel: {wheel} ({wheel.stat().st_size} bytes)")
        if not ns.wheel_only:
            deb = build_deb(wheel, Path(scratch) / "deb", out)
            print(f"deb:   {deb} ({deb.stat().st_size} bytes)")
    return 0


def project() -> dict[str, object]:
    with (CHECKOUT / "pyproject.toml").open("rb") as f:
        main_project: dict[str, object] = tomllib.load(f)["project"]
    return main_project


def build_wheel(staging: Path, out: Path) -> Path:
    """The device's packages and a pyproject of their own in `staging`, built by pip."""
    main_project = project()
    extras = main_project["optional-dependencies"]
    if not isinstance(extras, dict):
        sys.exit("device-package: pyproject.toml has no [project.optional-dependencies]")
    for package in PACKAGES:
        shutil.copytree(
            CHECKOUT / package, staging / package, ignore=shutil.ignore_patterns(*LEFT_OUT)
        )
    (staging / "README.md").write_text(
        "The Orange Friday device agent (`ota-agent`): see docs/agent.md in the project.\n"
    )
    (staging / "pyproject.toml").write_text(
        _device_pyproject(str(main_project["version"]), list(extras["agent"]))
    )
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), "."], staging)
    wheel = out / f"{DIST_NAME.replace('-', '_')}-{main_project['version']}-py3-none-any.whl"
    if not wheel.exists():
        sys.exit(f"device-package: pip built no {wheel.name} in {out}")
    return wheel


def _device_pyproject(version: str, dependencies: list[str]) -> str:
    toml_list = ", ".join(json.dumps(d) for d in dependencies)
    return f"""\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST_NAME}"
version = "{version}"
description = "Orange Friday device agent: TUF-verified A/B updates (no server code)"
readme = "README.md"
requires-python = ">=3.11"
license = "Apache-2.0"
dependencies = [{toml_list}]

[project.scripts]
ota-agent = "agent.cli:main"

[tool.setuptools.packages.find]
include = [{", ".join(f'"{p}*"' for p in PACKAGES)}]

[tool.setuptools.package-data]
"*" = ["py.typed"]
hardware = ["boot_scripts/*"]
"""


def build_deb(wheel: Path, tree: Path, out: Path) -> Path:
    """The package tree in `tree`, then `dpkg-deb --build`."""
    wheels = tree / "opt" / DEB_NAME / "wheels"
    wheels.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(wheels), str(wheel)])
    _install(HERE / "ota-agent.service", tree / "lib/systemd/system/ota-agent.service", 0o644)
    _install(HERE / "agent.toml", tree / "etc/ota-agent/agent.toml", 0o644)
    _install(CHECKOUT / "docs/agent.md", tree / "usr/share/doc/ota-agent/agent.md", 0o644)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/ota-agent").symlink_to("/opt/ota-agent/venv/bin/ota-agent")
    debian = tree / "DEBIAN"
    for script in ("postinst", "prerm", "postrm"):
        _install(HERE / script, debian / script, 0o755)
    (debian / "conffiles").write_text("/etc/ota-agent/agent.toml\n")
    version = str(project()["version"])
    arch = _architecture(wheels)
    (debian / "control").write_text(
        f"Package: {DEB_NAME}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {_kib(tree)}\n"
        f"Depends: {_python_depends(wheels)}, python3-venv\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Description: Orange Friday device agent (A/B updates from a TUF repository)\n"
        " ota-agent checks the update server, verifies releases with TUF, writes the\n"
        " inactive slot, boots it on trial and commits or rolls back. Runs as the\n"
        " systemd service ota-agent.service; configured in /etc/ota-agent/agent.toml.\n"
    )
    deb = out / f"{DEB_NAME}_{version}_{arch}.deb"
    _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)])
    return deb


def _install(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _architecture(wheels: Path) -> str:
    """`all` if every wheel is pure Python, else this machine's (the wheels are built for it)."""
    if all(w.name.endswith("-none-any.whl") for w in wheels.glob("*.whl")):
        return "all"
    done = subprocess.run(
        ["dpkg", "--print-architecture"],  # noqa: S607  # dpkg-deb's own sibling, on PATH
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _python_depends(wheels: Path) -> str:
    """A wheel built for one CPython (cp311-cp311) needs that one; abi3 and pure ones don't."""
    major, minor = sys.version_info[:2]
    tag = f"-cp{major}{minor}-cp{major}{minor}"
    if any(tag in w.name for w in wheels.glob("*.whl")):
        return f"python3 (>= {major}.{minor}), python3 (<< {major}.{minor + 1})"
    return "python3 (>= 3.11)"


def _kib(tree: Path) -> int:
    files = (p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files) // 1024 + 1


def _run(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.exit(f"device-package: {' '.join(argv[:4])} failed:\n{done.stderr.strip()}")


if __name__ == "__main__":
    sys.exit(main())
