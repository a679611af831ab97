"""What the evaluation's Markdown outputs share: data set titles and one table builder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: How each data set kind is named in the reports.
DATASET_TITLES = {"squad_v1": "SQuAD v1.1", "squad_v2": "SQuAD 2.0", "hotpotqa": "HotpotQA"}

_ALIGN = {"l": "---", "r": "---:"}


def table(head: str, align: str, rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table, one line per row, without a trailing newline.

    Args:
        head: the header line as it reads, `"a | b | c"` (no outer pipes).
        align: one letter per column, `l` (left) or `r` (right).
        rows: the cells of each row, formatted as an f-string would.

    Raises:
        KeyError: `align` holds a letter other than `l` or `r`.
    """
    lines = [f"| {head} |", "|" + "".join(_ALIGN[a] + "|" for a in align)]
    lines += (_line(cells) for cells in rows)
    return "\n".join(lines)


def _line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(f"{c}" for c in cells) + " |"
