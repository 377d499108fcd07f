"""Terminal output shared by the commands.

rich is imported on first use, not when the CLI is imported, so ``flowpost --help`` stays
fast. Tables are never cut: columns do not wrap or shorten their cells (no ``quanti…``),
and a table wider than the terminal (or than the 80 columns rich assumes when the output
is piped) is printed at its full width.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any


@functools.cache
def console() -> Any:
    """The shared ``rich.console.Console`` (created on first use)."""
    from rich.console import Console

    return Console()


def say(text: str) -> None:
    """Print ``text`` as it is (brackets in names such as ``theta[0]`` are not markup)."""
    from rich.markup import escape

    console().print(escape(text))


def error(message: object) -> None:
    """Print ``error: message`` in red (the message itself is printed as it is)."""
    from rich.markup import escape

    console().print(f"[red]error:[/red] {escape(str(message))}")


def warn(message: object) -> None:
    """Print ``warning: message`` in yellow."""
    from rich.markup import escape

    console().print(f"[yellow]warning:[/yellow] {escape(str(message))}")


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    left: Sequence[int] = (0,),
    bold_last: bool = False,
) -> None:
    """Print a table: column ``i`` is left-aligned if ``i in left``, else right-aligned.

    Cells are plain text (never markup); ``bold_last`` prints the last row in bold (a
    summary row such as ``mean ± se``)."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    rows = [list(r) for r in rows]
    say(title)  # above the table, not wrapped to its width
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i in left else "right", no_wrap=True)
    for k, r in enumerate(rows):
        style = "bold" if bold_last and k == len(rows) - 1 else ""
        t.add_row(*(Text(str(v), style=style) for v in r))
    con = console()
    need = Measurement.get(con, con.options.update_width(10_000), t).maximum  # the table's natural width
    if need > con.width:  # wider than the terminal: print it whole (the terminal wraps lines; rich would cut cells)
        from rich.console import Console

        con = Console(width=need)
    con.print(t)
