"""Delta benchmark (issue 13): our patch against the peers' on one pair of images.

Each tool makes a patch from OLD to NEW and applies it to OLD, each step in its own process;
generation is timed, apply is timed and its peak RSS read from the kernel (wait4), and every
output's sha256 is compared with NEW's. Tools: `orangefriday` (romdelta, this project's),
`bsdiff`, `xdelta3 -9`, `zstd -19 --long=30 --patch-from`, HDiffPatch (PyPI `hdiffpatch`,
lzma) and detools (PyPI, its hdiffpatch algorithm, lzma), and the full image as `zstd -19`.

The Debian tools: `apt-get install bsdiff xdelta3 zstd`. HDiffPatch and detools live in the
bench's own environment, never the agent's: `make .venv-bench/.installed`
(bench/requirements-delta.txt).
A tool that is missing gets a row with `ok: false` and a `missing` hint.

Prints a JSON list of rows: tool, patch_bytes, generate_s, apply_s, apply_peak_rss_mb, ok.
Run: .venv/bin/python bench/delta.py OLD NEW [--only-ours] [--workdir DIR]
A ROM pair: bash ../shared/make_rom_pair.sh /tmp/rompair .venv/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
HERE = Path(__file__).resolve()
BENCH_VENV = "make .venv-bench/.installed"

Commands = Callable[[Path, Path, Path, Path], tuple[list[str], list[str]]]


@dataclass
class Row:
    tool: str
    patch_bytes: int = 0
    generate_s: float = 0.0
    apply_s: float = 0.0
    apply_peak_rss_mb: float = 0.0
    ok: bool = False
    missing: str = field(default="")


def ours(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
    py = [sys.executable, "-m", "romdelta"]
    return [*py, "make", str(old), str(new), str(patch)], [
        *py,
        "apply",
        str(old),
        str(patch),
        str(out),
    ]


def bsdiff(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
    return ["bsdiff", str(old), str(new), str(patch)], ["bspatch", str(old), str(out), str(patch)]


def xdelta3(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
    return (
        ["xdelta3", "-9", "-e", "-f", "-s", str(old), str(new), str(patch)],
        ["xdelta3", "-d", "-f", "-s", str(old), str(patch), str(out)],
    )


def zstd_patch_from(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
    zstd = ["zstd", "-q", "-f", "--long=30", f"--patch-from={old}"]
    return [*zstd, "-19", str(new), "-o", str(patch)], [*zstd, "-d", str(patch), "-o", str(out)]


def zstd_full(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
    zstd = ["zstd", "-q", "-f"]
    return [*zstd, "-19", str(new), "-o", str(patch)], [*zstd, "-d", str(patch), "-o", str(out)]


def python_peer(name: str) -> Commands:
    def commands(old: Path, new: Path, patch: Path, out: Path) -> tuple[list[str], list[str]]:
        helper = [str(BENCH_PYTHON), str(HERE), "--peer", name]
        return [*helper, "make", str(old), str(new), str(patch)], [
            *helper,
            "apply",
            str(old),
            str(patch),
            str(out),
        ]

    return commands


TOOLS: dict[str, tuple[Commands, str, str]] = {  # name: (commands, needs, how to get it)
    "orangefriday": (ours, sys.executable, "make .venv/.installed"),
    "bsdiff": (bsdiff, "bsdiff", "apt-get install bsdiff"),
    "xdelta3 -9": (xdelta3, "xdelta3", "apt-get install xdelta3"),
    "zstd -19 --long=30 --patch-from": (zstd_patch_from, "zstd", "apt-get install zstd"),
    "hdiffpatch (lzma)": (
        python_peer("hdiffpatch"),
        str(BENCH_PYTHON),
        "make .venv-bench/.installed",
    ),
    "detools (hdiffpatch, lzma)": (
        python_peer("detools"),
        str(BENCH_PYTHON),
        "make .venv-bench/.installed",
    ),
    "zstd -19 (full image)": (zstd_full, "zstd", "apt-get install zstd"),
}


# --------------------------------------------------------------------------- measuring


def run(argv: list[str]) -> tuple[float, float]:
    """Run `argv` to its end; (wall seconds, peak RSS in MB). Raises on a non-zero exit.

    The peak RSS is GNU time's (`%M`, from wait4): a child forked straight from this Python
    would count this process's pages from before its exec."""
    with tempfile.NamedTemporaryFile("r") as rss:
        timed = ["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name, *argv]
        started = time.perf_counter()
        done = subprocess.run(timed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        peak_kib = rss.read().strip().splitlines()
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()[-800:]
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {errors}")
    return wall, int(peak_kib[-1]) / 1024


def sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def measure(name: str, old: Path, new: Path, workdir: Path, expected: str) -> Row:
    commands, needs, how = TOOLS[name]
    row = Row(name)
    if shutil.which(needs) is None:
        row.missing = f"{needs} not found: {how}"
        print(f"{name}: {row.missing}", file=sys.stderr)
        return row
    slug = "".join(c if c.isalnum() else "-" for c in name)
    patch, out = workdir / f"{slug}.patch", workdir / f"{slug}.out"
    make, apply = commands(old, new, patch, out)
    try:
        row.generate_s, _ = run(make)
        row.patch_bytes = patch.stat().st_size
        row.apply_s, row.apply_peak_rss_mb = run(apply)
        row.ok = sha256(out) == expected
    except (RuntimeError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
    finally:
        out.unlink(missing_ok=True)
    row.generate_s, row.apply_s = round(row.generate_s, 2), round(row.apply_s, 2)
    row.apply_peak_rss_mb = round(row.apply_peak_rss_mb, 1)
    print(json.dumps(asdict(row)), file=sys.stderr, flush=True)
    return row


# --------------------------------------------------------------------------- peers (in .venv-bench)


def peer(name: str, action: str, paths: list[str]) -> None:
    """Make or apply a patch with a PyPI peer; runs under .venv-bench's Python."""
    if name == "hdiffpatch":
        import hdiffpatch

        if action == "make":
            old, new, patch = (Path(p) for p in paths)
            lzma = hdiffpatch.COMPRESSION_LZMA
            patch.write_bytes(hdiffpatch.diff(old.read_bytes(), new.read_bytes(), lzma))
        else:
            old, patch, out = (Path(p) for p in paths)
            out.write_bytes(hdiffpatch.apply(old.read_bytes(), patch.read_bytes()))
        return
    import detools

    if action == "make":
        with open(paths[0], "rb") as a, open(paths[1], "rb") as b, open(paths[2], "wb") as c:
            detools.create_patch(
                a, b, c, compression="lzma", patch_type="hdiffpatch", algorithm="hdiffpatch"
            )
    else:
        with open(paths[0], "rb") as a, open(paths[1], "rb") as b, open(paths[2], "wb") as c:
            detools.apply_patch(a, b, c)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?")
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--only-ours", action="store_true", help="skip the peers")
    parser.add_argument("--tool", action="append", help="only this tool (repeatable)")
    parser.add_argument("--workdir", type=Path, help="where patches go (default: a temp dir)")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:  # bench/delta.py --peer NAME make|apply A B C (inside .venv-bench)
        peer(args.peer, str(args.old), [str(args.new), *args.rest])
        return 0
    if not Path("/usr/bin/time").exists():
        print("bench/delta.py needs GNU time: apt-get install time", file=sys.stderr)
        return 2
    names = ["orangefriday"] if args.only_ours else args.tool or list(TOOLS)
    expected = sha256(args.new)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        rows = [measure(n, args.old, args.new, Path(workdir), expected) for n in names]
    print(json.dumps([asdict(r) for r in rows], indent=1))
    return 0 if all(r.ok for r in rows if not r.missing) else 1


if __name__ == "__main__":
    sys.exit(main())
