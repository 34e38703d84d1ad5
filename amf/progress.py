"""Progress for long commands: a bar on a terminal, a few plain lines in a log.

A redirected stderr (a log file, a CI job) gets no bar, since tqdm's carriage returns fill it with clutter,
but it still hears from a long run: one line at every tenth of the work, with the rate and the time left, and a
last line with the total time.
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
        elif self.total and self.done >= self._next_line:
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"{self.desc}: {self.done} of {self.total} {self._units()} ({100 * self.done / self.total:.0f}%), "
                  f"{_rate(rate, self.unit)}, {_duration(elapsed)} so far, {_duration(left)} left", file=sys.stderr,
                  flush=True)
            self._next_line = self.total * (int(10 * self.done / self.total) + 1) / 10

    def close(self) -> None:
        """Close the bar; in a log, one last line with the total time."""
        if self._bar is not None:
            self._bar.close()
        elif self.total:
            elapsed = time.perf_counter() - self.start
            print(f"{self.desc}: {self.done} {self._units()} in {_duration(elapsed)}", file=sys.stderr, flush=True)

    def _units(self) -> str:
        return self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")  # patches, files


def _duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``: short runs keep a decimal, so they never read ``0 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _rate(per_second: float, unit: str) -> str:
    return f"{per_second:.1f} {unit}/s" if per_second < 1000 else f"{per_second:,.0f} {unit}/s"
