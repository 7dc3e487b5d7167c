#!/usr/bin/env python3
"""Copy a results file into benchmarks/README.md between its markers, so the figures there are the
script's own output, never retyped: paste_results.py serving results/2026-11-23-vm-quick.md"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def splice(readme: str, section: str, content: str) -> str:
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"README has no {start} ... {end} markers")
    # Headings of the results file move two levels down, under the README's own.
    body = re.sub(
        r"^(#+) ", lambda m: "#" * min(len(m[1]) + 2, 6) + " ", content.strip(), flags=re.MULTILINE
    )
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("section", choices=["serving", "transformer", "operator"])
    parser.add_argument(
        "results", type=Path, help="a .md file written by serving.py or operator_scale.py"
    )
    args = parser.parse_args(argv)
    README.write_text(
        splice(
            README.read_text(encoding="utf-8"),
            args.section,
            args.results.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
