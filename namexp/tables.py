"""One markdown-table writer for every command that writes tables (compare, analyze, bench)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_cell(text: object) -> str:
    """A cell that cannot break the table: backslashes and pipes escaped, newlines folded."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a GitHub-flavoured markdown table (header, rule, one line per row)."""
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return lines
