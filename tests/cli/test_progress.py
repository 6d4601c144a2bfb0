"""The CLI's progress bar: drawn on a terminal, silent otherwise."""
from __future__ import annotations

import io

from stylize_cli.progress import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_on_a_terminal_and_ends_the_line():
    term = _Terminal()
    with ProgressBar(4, "gatys", stream=term, width=8, min_interval=0) as bar:
        for i in range(1, 5):
            bar.update(i, f"loss {10 - i}")
    text = term.getvalue()
    frames = [f for f in text.split("\r") if f]
    assert frames[0].startswith("gatys [##......] 1/4") and "loss 9" in frames[0]
    assert "[########] 4/4" in frames[-1] and text.endswith("\n")


def test_silent_when_not_a_terminal_and_total_can_change():
    pipe = io.StringIO()
    bar = ProgressBar(0, "x", stream=pipe)
    assert not bar.enabled
    bar.update(3, "t", total=10)
    bar.advance(2)
    bar.close()
    assert pipe.getvalue() == ""
    assert (bar.count, bar.total) == (5, 10)
    assert "[##############..............] 5/10" in bar.render()


def test_throttles_redraws():
    term = _Terminal()
    bar = ProgressBar(1000, stream=term, min_interval=60)
    for i in range(1, 1000):
        bar.update(i)
    assert term.getvalue().count("\r") == 1  # the first frame only; the rest fall inside the interval
    bar.update(1000)  # the final frame is always drawn
    assert term.getvalue().count("\r") == 2


def test_plain_lines_for_logs_at_most_every_interval(monkeypatch):
    import stylize_cli.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = ProgressBar(0, "stylize run", stream=log, log_every=10)
    bar.update(0, total=10)
    for t, n in ((5, 1), (111, 3), (115, 4), (122, 6), (140, 10)):
        clock[0] = float(t) if t > 100 else 100.0 + t
        bar.update(n, "2 skipped")
    bar.close()
    assert log.getvalue().splitlines() == [
        "stylize run: 3/10 (30.0%), 0.27/s, elapsed 0:00:11, eta 0:00:26, 2 skipped",
        "stylize run: 6/10 (60.0%), 0.27/s, elapsed 0:00:22, eta 0:00:15, 2 skipped",
    ]  # nothing before 10 s, none within 10 s of the last, none at the end (the summary follows)


def test_rate_and_eta_count_from_the_start_of_the_work(monkeypatch):
    """Setup before the rows (a Prefect server start, planning) counts in the elapsed time, not in the rate."""
    import stylize_cli.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = ProgressBar(100, "stylize run", stream=io.StringIO(), enabled=False)
    clock[0] = 30.0  # 30 s of setup
    bar.start_work()
    clock[0] = 40.0
    bar.update(20)
    assert bar.log_line() == "stylize run: 20/100 (20.0%), 2.00/s, elapsed 0:00:40, eta 0:00:40"
