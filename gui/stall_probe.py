"""Measure how long the GUI thread's event loop goes without running: the stalls a user feels.

A 5 ms timer on the GUI thread records the time between its ticks. An idle event loop ticks every
~5 ms; any longer gap is time the loop spent blocked (a slot doing heavy work, the worker thread
holding the GIL, ...). Use as a context manager around the phase to measure while the loop runs:

    with StallProbe() as probe:
        qtbot.waitUntil(lambda: done, timeout=...)
    print(probe.report())
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import QEventLoop, QObject, Qt, QTimer


@dataclass
class StallStats:
    ticks: int
    duration_s: float
    max_ms: float
    p99_ms: float
    median_ms: float

    def __str__(self) -> str:
        return (f"{self.ticks} ticks in {self.duration_s:.1f} s: max gap {self.max_ms:.0f} ms, "
                f"p99 {self.p99_ms:.0f} ms, median {self.median_ms:.1f} ms")


class StallProbe(QObject):
    def __init__(self, interval_ms: int = 5, parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.gaps_ms: list[float] = []
        self._last = 0.0
        self._t0 = 0.0
        self._t1 = 0.0

    def start(self) -> None:
        self.gaps_ms.clear()
        self._t0 = self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> StallStats:
        self._timer.stop()
        self._t1 = time.perf_counter()
        # The time since the last tick counts too: a loop blocked until the end shows up here.
        self.gaps_ms.append((self._t1 - self._last) * 1000)
        return self.stats()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps_ms.append((now - self._last) * 1000)
        self._last = now

    def stats(self) -> StallStats:
        gaps = sorted(self.gaps_ms) or [0.0]
        p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
        return StallStats(len(self.gaps_ms), self._t1 - self._t0, gaps[-1], p99, gaps[len(gaps) // 2])

    def __enter__(self) -> "StallProbe":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_until(condition, timeout_s: float) -> bool:
    """Run the real event loop (not processEvents) until condition() is true, checked every
    10 ms, or until timeout_s; the measuring scripts wait with this so the probe keeps ticking."""
    loop = QEventLoop()
    poll = QTimer(interval=10)
    poll.timeout.connect(lambda: condition() and loop.quit())
    deadline = QTimer(singleShot=True, interval=int(timeout_s * 1000))
    deadline.timeout.connect(loop.quit)
    poll.start()
    deadline.start()
    if not condition():
        loop.exec()
    poll.stop()
    deadline.stop()
    return bool(condition())
