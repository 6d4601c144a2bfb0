"""A small dependency-free progress bar for the CLI (optimisation steps, images of a run).

It draws only when its stream is a terminal. Elsewhere (a log file, a pipe) it is silent, or, with
``log_every`` seconds, writes one plain progress line at most that often, so that long runs whose
output goes to a log still show where they are. Redraws are throttled to ~10 per second.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar = ProgressBar(300, "gatys"); bar.update(12, "loss 3.1"); bar.close()``."""

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None, width: int = 28,
                 enabled: bool | None = None, min_interval: float = 0.1, log_every: float = 0.0):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = max(0, int(total))
        self.label = label
        self.width = width
        self.min_interval = min_interval
        self.count = 0
        self.text = ""
        self._start = time.monotonic()
        self._rate_start = self._start  # the rate and ETA count from here (see start_work)
        self._last_draw = 0.0
        self._drawn = False
        self.log_every = max(0.0, float(log_every))
        self._last_log = self._start

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, count: int, text: str = "", *, total: int | None = None) -> None:
        """Set the absolute count (and optionally the total and a short status text), redraw if due."""
        if total is not None:
            self.total = max(0, int(total))
        self.count, self.text = int(count), text
        if not self.enabled:
            if self.log_every:
                now = time.monotonic()
                if now - self._last_log >= self.log_every and self.count < self.total:
                    self._last_log = now
                    self.stream.write(self.log_line(now) + "\n")
                    self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval or self.count >= self.total:
            self._draw(now)

    def start_work(self) -> None:
        """The work itself starts now (after setup such as a server start): rate and ETA count from here, the
        elapsed time still from the bar's creation."""
        self._rate_start = time.monotonic()

    def advance(self, n: int = 1, text: str = "") -> None:
        """Add ``n`` to the count."""
        self.update(self.count + n, text or self.text)

    def render(self, now: float | None = None) -> str:
        """The bar as one line of text (without the carriage return)."""
        frac = min(1.0, self.count / self.total) if self.total else 0.0
        filled = int(round(frac * self.width))
        elapsed, _, eta = self._pace(now)
        parts = [p for p in (self.label, f"[{'#' * filled}{'.' * (self.width - filled)}]",
                             f"{self.count}/{self.total}", f"{elapsed:.0f}s<{eta or 0.0:.0f}s", self.text) if p]
        return " ".join(parts)

    def log_line(self, now: float | None = None) -> str:
        """One plain line for logs: ``label: 1234/100000 (1.2%), 12.3/s, elapsed 0:01:40, eta 2:13:05, text``."""
        elapsed, rate, eta = self._pace(now)
        pct = f" ({100 * self.count / self.total:.1f}%)" if self.total else ""
        parts = [f"{self.label + ': ' if self.label else ''}{self.count}/{self.total}{pct}", f"{rate:.2f}/s",
                 f"elapsed {_hms(elapsed)}", f"eta {'?' if eta is None else _hms(eta)}"] + ([self.text] if self.text else [])
        return ", ".join(parts)

    def _pace(self, now: float | None) -> tuple[float, float, float | None]:
        """(elapsed seconds, items per second, seconds left or None while the rate is unknown)."""
        now = time.monotonic() if now is None else now
        elapsed, working = now - self._start, now - self._rate_start
        rate = self.count / working if working > 0 else 0.0
        return elapsed, rate, (self.total - self.count) / rate if rate > 0 and self.total else None

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self.stream.write("\r" + self.render(now) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (nothing when disabled or never drawn)."""
        if self.enabled and self._drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
