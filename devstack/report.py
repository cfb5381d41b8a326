"""Plain-text tables for the reports of the benchmarks and the reliability suite."""

from __future__ import annotations


def format_table(headers: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """Plain-text table; the first `left` columns are left-aligned, numbers right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i < left else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
