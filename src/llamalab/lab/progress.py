"""Progress on stderr for long runs: a rich bar on a terminal, one line per step in a log."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from .runner import Progress


@contextmanager
def progress_bar(total: int, title: str, enabled: bool = True) -> Iterator[Progress]:
    """Yields a callback (steps done, what is running now) that advances the bar."""
    if not enabled:
        yield lambda n, what: None
        return
    if not sys.stderr.isatty():  # a log file: rich would draw nothing until the end
        done, t0 = [0], time.time()

        def log(n: int, what: str) -> None:
            done[0] += n
            if what:
                print(f"[{title} {done[0]}/{total} {time.time() - t0:6.0f}s] {what}", file=sys.stderr, flush=True)

        yield log
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    with RichProgress(TextColumn("[bold]{task.fields[title]}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                      transient=False) as bar:
        task = bar.add_task("", total=total, title=title)

        def advance(n: int, what: str) -> None:
            if what:
                bar.update(task, description=what)
            if n:
                bar.advance(task, n)

        yield advance
