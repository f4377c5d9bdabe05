"""Markdown tables, written one way for every report, card and results page."""


def table_lines(header, rows):
    """The lines of a Markdown table: `header` (cell texts), its `|---|` rule, then one
    line per row of `rows` (each a sequence of cell texts)."""
    return [_line(header), "|" + "---|" * len(header), *(_line(row) for row in rows)]


def table(header, rows):
    """`table_lines` joined, ending with a newline."""
    return "\n".join(table_lines(header, rows)) + "\n"


def _line(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"
