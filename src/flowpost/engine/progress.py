"""One rich progress bar for every long loop in flowpost (fits, epochs, evaluations)."""

from __future__ import annotations

import sys


class ProgressBar:
    """``with ProgressBar(total, label, fields={"elbo": "ELBO"}) as bar: bar.update(done, elbo="1.2")``.

    ``fields`` maps a live value's key to the label shown before it; ``update`` takes the
    values as preformatted strings. ``start``: units already done (a resumed run). A no-op
    when ``enabled`` is false.

    In a narrow terminal the label is shortened, never the counter; when the output is not
    a terminal (piped, a log file, CI) there is no live bar: one line is written at the
    start and one at the end, each whole.
    """

    def __init__(
        self, total: int, label: str, fields: dict[str, str] | None = None, start: int = 0, enabled: bool = True
    ):
        self.total, self.label, self.fields, self.start, self.enabled = total, label, fields or {}, start, enabled
        self.done = start
        self.values: dict[str, str] = {}

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            from rich.console import Console
        except ImportError:  # rich is optional (the `cli` extra): plain lines, as when piped
            console = None
        else:
            console = Console(stderr=True)
        self._live = console is not None and console.is_terminal
        if not self._live:
            print(f"{self.label}: {self.start}/{self.total}", file=sys.stderr, flush=True)
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        live = [TextColumn("  ".join(f"{name} {{task.fields[{key}]}}" for key, name in self.fields.items()))]
        narrow = console.width < 100
        columns = [
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=None if not narrow else 10),
            MofNCompleteColumn(),
            *(live if self.fields else []),
            *([] if narrow else [TimeRemainingColumn()]),
        ]
        self._p = Progress(*columns, console=console, expand=False)
        self._p.__enter__()
        self._task = self._p.add_task(
            self.label, total=self.total, completed=self.start, **{key: "..." for key in self.fields}
        )
        return self

    def update(self, done: int, **values: str) -> None:
        """``done`` units so far, and the live values (preformatted strings) by field key."""
        self.done, self.values = done, {**self.values, **values}
        if self.enabled and self._live:
            self._p.update(self._task, completed=done, **values)

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        if self._live:
            self._p.__exit__(*exc)
        else:
            shown = "  ".join(f"{self.fields[k]} {v}" for k, v in self.values.items() if k in self.fields)
            print(f"{self.label}: {self.done}/{self.total}  {shown}".rstrip(), file=sys.stderr, flush=True)
        return False
