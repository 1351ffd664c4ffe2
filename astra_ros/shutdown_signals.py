"""SIGINT / SIGTERM -> one clean shutdown, however many signals arrive. Pure Python, no ROS.

`ros2 launch` answers Ctrl-C by signalling the node's process group and then the node itself,
so the node receives SIGINT twice (later SIGTERM, then SIGKILL if it is still running). rclpy's
own handlers turn each SIGINT into a KeyboardInterrupt; the second one lands inside the shutdown
code, which then dies with exit code -2 and no summary. Here a signal only sets a flag the main
thread waits on: the first starts the shutdown, repeats are absorbed, and the process exits 0.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Iterable

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownRequest:
    """Install with `install()` (main thread only); the main thread then calls `wait()`."""

    def __init__(self, on_signal: Callable[[str, int], None] | None = None,
                 signals: Iterable[signal.Signals] = DEFAULT_SIGNALS) -> None:
        self._event = threading.Event()
        self._on_signal = on_signal  # (signal name, how many signals so far) -> None, e.g. a log line
        self._signals = tuple(signals)
        self.count = 0

    def install(self) -> None:
        for signum in self._signals:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:  # runs in the main thread, between bytecodes
        self.count += 1
        self._event.set()
        if self._on_signal is not None:
            self._on_signal(signal.Signals(signum).name, self.count)

    def absorb_further_signals(self) -> None:
        """From now on (cleanup done, the process is exiting) these signals are ignored."""
        for signum in self._signals:
            signal.signal(signum, signal.SIG_IGN)

    def request(self) -> None:
        """Ask for shutdown from code (e.g. the context was shut down by someone else)."""
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, poll_s: float = 0.2, also_stop: Callable[[], bool] = lambda: False) -> None:
        """Block until a signal (or `request()`, or `also_stop()` true). Polls, so that signal
        handlers run promptly in the main thread whatever the platform's lock semantics."""
        while not self._event.wait(poll_s):
            if also_stop():
                return
