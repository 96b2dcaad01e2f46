"""`python -m romdelta make OLD NEW PATCH` and `python -m romdelta apply OLD PATCH OUT`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from romdelta.apply import apply_patch
from romdelta.format import PatchError
from romdelta.make import MakeOptions, make_patch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m romdelta")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write a patch from OLD to NEW")
    make.add_argument("old", type=Path)
    make.add_argument("new", type=Path)
    make.add_argument("patch", type=Path)
    make.add_argument("--workers", type=int, default=2)
    apply = commands.add_parser("apply", help="write OUT from OLD and PATCH")
    apply.add_argument("old", type=Path)
    apply.add_argument("patch", type=Path)
    apply.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "make":
        stats = make_patch(args.old, args.new, args.patch, MakeOptions(workers=args.workers))
        print(json.dumps(asdict(stats)))
        return 0
    try:
        with args.patch.open("rb") as patch, args.old.open("rb") as old, args.out.open("wb") as out:
            apply_patch(patch, old, out)
    except PatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
