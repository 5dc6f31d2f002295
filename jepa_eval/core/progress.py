"""Progress that behaves in logs: a redrawn bar on a terminal, a plain line every few percent elsewhere.

When standard error is not a terminal (CI, ``nohup``, a job scheduler's log file), carriage-return
redraws turn into megabytes of garbage; there a :class:`LineProgress` prints one line each time
another :data:`LINE_EVERY_PERCENT` percent is done, with the elapsed time and an estimate of what is
left, and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

LINE_EVERY_PERCENT = 5


class LineProgress:
    """The part of tqdm's interface the project uses (iterate, ``update``, ``set_postfix``,
    ``close``), printing lines instead of redrawing."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", file: TextIO | None = None) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.file = desc, unit, file or sys.stderr
        self.done, self.postfix, self.printed = 0, "", 0
        self.start = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.total:
            step = int(100 * self.done / self.total) // LINE_EVERY_PERCENT * LINE_EVERY_PERCENT
            if step > self.printed and self.done < self.total:
                self._line(step)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.printed < 100:
            self._line(100 if self.total else None)

    def _line(self, percent: int | None) -> None:
        elapsed = time.perf_counter() - self.start
        if percent is None:
            head = f"{self.done} {self.unit}"
        else:
            self.printed = percent
            left = elapsed * (self.total - self.done) / self.done if self.done else 0.0
            head = f"{percent:3d}% ({self.done}/{self.total} {self.unit}), {elapsed:.0f} s, ~{left:.0f} s left"
        tail = f"; {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {head}{tail}" if self.desc else head + tail, file=self.file, flush=True)


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` lines otherwise, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)
