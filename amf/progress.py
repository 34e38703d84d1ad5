"""Progress for long commands: a bar on a terminal, a few plain lines in a log.

A redirected stderr (a log file, a CI job) gets no bar, since tqdm's carriage returns fill it with clutter,
but it still hears from a long run: one line at every tenth of the work.
"""

from __future__ import annotations

import sys
import time


def interactive() -> bool:
    """Whether stderr is a terminal (bars are drawn only there)."""
    return sys.stderr.isatty()


class Progress:
    """Counts units of work done out of ``total``: a tqdm bar on a terminal, else a line per tenth."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.start = time.perf_counter()
        self._next_line = total / 10
        self._bar = None
        if interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.total and self.done >= self._next_line and self.done < self.total:
            pct = 100 * self.done / self.total
            units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")  # patches, files
            print(f"{self.desc}: {self.done} of {self.total} {units} ({pct:.0f}%), "
                  f"{time.perf_counter() - self.start:.0f} s", file=sys.stderr, flush=True)
            self._next_line = self.total * (int(10 * self.done / self.total) + 1) / 10

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
