"""``make bench``: run every benchmark and write bench/results/*.json.

Usage: python bench/run.py [tiling ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHES = ("tiling", "labels", "scaling", "session", "loader", "train", "interop")


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all by default)."""
    names = argv or list(BENCHES)
    for name in names:
        if name not in BENCHES:
            print(f"unknown benchmark {name}; choose from {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        module = __import__(name)
        print(f"== {name}", flush=True)
        module.main()
    import render

    render.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
