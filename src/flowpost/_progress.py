"""One rich progress bar for every long loop in flowpost (fits, epochs, evaluations)."""

from __future__ import annotations


class ProgressBar:
    """``with ProgressBar(total, label, fields={"elbo": "ELBO"}) as bar: bar.update(done, elbo="1.2")``.

    ``fields`` maps a live value's key to the label shown before it; ``update`` takes the
    values as preformatted strings. ``start``: steps already done (a resumed run). A no-op
    when ``enabled`` is false.
    """

    def __init__(self, total: int, label: str, fields: dict[str, str] | None = None, start: int = 0,
                 enabled: bool = True):
        self.total, self.label, self.fields, self.start, self.enabled = total, label, fields or {}, start, enabled

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            live = [TextColumn("  ".join(f"{name} {{task.fields[{key}]}}" for key, name in self.fields.items()))]
            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               *(live if self.fields else []), TimeRemainingColumn())
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=self.total, completed=self.start,
                                          **{key: "..." for key in self.fields})
        return self

    def update(self, done: int, **values: str) -> None:
        if self.enabled:
            self._p.update(self._task, completed=done, **values)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
