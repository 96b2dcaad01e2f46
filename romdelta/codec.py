"""The zstd bindings: the standard library's `compression.zstd` (Python 3.14+), else its
official backport `backports.zstd` (the same API on 3.9-3.13).

Chosen over python-zstandard for one call: `ZstdDict.as_prefix`, zstd's reference-prefix
mode (what `zstd --patch-from` uses), where long-distance matching sees the old data; a raw
dictionary in python-zstandard is indexed without it (3.48 MB against 3.16 MB on the ROM pair
in docs/benchmarks.md).
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = ["zstd"]
