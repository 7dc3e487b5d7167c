"""Reading the Markdown tables the benchmark scripts print."""

from __future__ import annotations


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text``, header rows included, separator rows left out."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
